"""Developer sessions: `nox` runs lint and tests; `nox -s bench`, `nox -s e2e`,
`nox -s fuzz` and `nox -s reliability` are separate."""

import os

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def lint(session: nox.Session) -> None:
    session.install("-e", ".[lint]")
    session.run("ruff", "check", "bjc", "tests", "benchmarks", "tools", "noxfile.py")
    session.run("ruff", "format", "--check", "bjc", "tests", "benchmarks", "tools", "noxfile.py")
    session.run("mypy", "bjc")
    session.run("hadolint", "Dockerfile", "examples/job-image/Dockerfile")


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    # helm for the chart's tests (tests/unit/test_chart.py), built once into the cache;
    # a failed build does not end the session: the tests say why (and fail under CI=true)
    helm = ["bash", "tests/e2e/build_binaries.sh", "helm"]
    session.run(*helm, external=True, success_codes=[0, 1])
    session.run("pytest", "-q", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    session.install("-e", ".[test,bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def e2e(session: nox.Session) -> None:
    """Against a real control plane (KUBEBUILDER_ASSETS, else built into a cache)."""
    session.install("-e", ".[test]")
    # a failed build does not end the session here: the tests then say why (and
    # fail under CI=true, skip elsewhere)
    for target in ("control-plane", "node", "helm"):
        build = ["bash", "tests/e2e/build_binaries.sh", target]
        session.run(*build, external=True, success_codes=[0, 1])
    # the controller and example job images for the real node (tests/e2e/test_realnode.py)
    images = ["bash", "tests/e2e/realnode/build_images.sh", realnode_images()]
    session.run(*images, external=True, success_codes=[0, 1])
    env = {"BJC_E2E": "1", "BJC_E2E_NO_BUILD": "1"}
    # tests/e2e, and the integration scenarios' runs on the real control plane
    args = ["tests/e2e", "tests/integration", "-m", "e2e"]
    session.run("pytest", "-q", "-rs", *args, *session.posargs, env=env)


def realnode_images() -> str:
    """Where build_images.sh leaves the image archives (as tests/e2e/binaries.py finds it)."""
    cache = os.environ.get("BJC_E2E_CACHE", os.path.expanduser("~/.cache/bjc-e2e"))
    return os.path.join(cache, "images", "out")


@nox.session
def kubeproto(session: nox.Session) -> None:
    """Regenerate bjc/sim/kubeproto.binpb from k8s.io/api's .proto files (needs Go)."""
    session.install("-e", ".", "grpcio-tools")
    session.run("python", "tools/gen_kubeproto.py")


@nox.session
def fuzz(session: nox.Session) -> None:
    """The callback API fuzz (tests/integration/test_callback_fuzz.py) with many examples.

    `nox -s tests` runs it with 100 examples per test; this runs BJC_FUZZ_EXAMPLES
    (default 3000) and writes the counts of requests by route and status to
    fuzz-report.json (what docs/reliability.md reports).
    """
    session.install("-e", ".[test]")
    env = {
        "BJC_FUZZ_EXAMPLES": os.environ.get("BJC_FUZZ_EXAMPLES", "3000"),
        "BJC_FUZZ_REPORT": "fuzz-report.json",
    }
    session.run(
        "pytest", "-q", "tests/integration/test_callback_fuzz.py", *session.posargs, env=env
    )


@nox.session
def reliability(session: nox.Session) -> None:
    """Faults and failover against bjc.sim, full counts; the table goes to docs/reliability.md."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "tests.reliability", *session.posargs)
