"""Developer sessions: `nox` runs lint and tests; `nox -s bench` is the separate, longer one."""

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def lint(session: nox.Session) -> None:
    session.install("-e", ".[lint]")
    session.run("ruff", "check", "bjc", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "bjc", "tests", "benchmarks", "noxfile.py")
    session.run("mypy", "bjc")
    session.run("hadolint", "Dockerfile")


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("pytest", "-q", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("python", "-m", "benchmarks", *session.posargs)
