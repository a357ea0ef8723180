"""The documentation is checked like code: the configuration reference against the
config loader, the README's shell commands by running them, and every relative link.

Three checks:
- every `config.yaml` key the loader knows is a row of the key table in
  docs/configuration.md, and every row is a key the loader accepts without an
  "unknown key" warning; likewise the environment variables;
- every command in a ```sh / ```shell / ```console block of README.md runs, in a
  temporary directory and bounded in time (see `_check_command` for the few commands
  that are checked without being run, and why);
- every relative link in README.md and docs/ points to a file that exists, and an
  anchor (`file.md#heading`) to a heading of that file.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from bjc.config.settings import _KNOWN_KEYS, Environment, MetricsConfig, load_config

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
CONFIGURATION = DOCS / "configuration.md"
MARKDOWN = [README, *sorted(DOCS.rglob("*.md"))]

#: Quick-start commands run for at most this long; `bjc demo --executions 1` takes ~4 s.
COMMAND_TIMEOUT = 120


# --------------------------------------------------------------------------- config keys


def first_column(heading: str) -> list[str]:
    """The first column (code-quoted) of the table under `## heading` in configuration.md."""
    section = CONFIGURATION.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", section, flags=re.M)


def documented_keys() -> list[str]:
    return first_column("`config.yaml` keys")


def code_keys() -> set[str]:
    """What the loader knows: top-level keys (with aliases) and `metrics.*`, the
    `metrics` mapping itself being documented by its keys."""
    nested = {f"metrics.{f.encode_name}" for f in msgspec.structs.fields(MetricsConfig)}
    return (set(_KNOWN_KEYS) - {"metrics"}) | nested


def test_every_config_key_is_in_the_configuration_reference():
    missing = code_keys() - set(documented_keys())
    assert not missing, f"config keys missing from docs/configuration.md: {sorted(missing)}"


def test_every_documented_config_key_is_known_to_the_loader():
    documented = documented_keys()
    assert len(documented) == len(set(documented)), "a key is documented twice"
    unknown = set(documented) - code_keys()
    assert not unknown, f"docs/configuration.md documents unknown keys: {sorted(unknown)}"


def test_the_environment_table_lists_exactly_the_variables_the_controller_reads():
    documented = set(first_column("Controller environment"))
    read = {f.name.upper() for f in msgspec.structs.fields(Environment)}
    assert documented == read


def test_the_loader_accepts_every_documented_top_level_key_without_a_warning():
    """The same check through the loader itself: a config naming every documented key
    (with its default) draws no "unknown key" warning."""
    top = {k for k in documented_keys() if "." not in k} - {"imagePullSecrets"}  # an alias
    text = "name: docs\ncronExpression: '@hourly'\nreportDirectory: /tmp\n"
    text += "".join(f"{k}: null\n" for k in sorted(top - {"name", "cronExpression"}))
    text = text.replace("reportDirectory: null\n", "")
    text += "metrics: {port: null, prefix: docs, gauges: null}\n"
    _, warnings = load_config(text)
    assert not [w for w in warnings if "unknown key" in w]


# --------------------------------------------------------------------------- README commands


def readme_commands() -> list[str]:
    """Each command line of the README's shell blocks, `\\` continuations joined."""
    commands = []
    blocks = re.findall(r"^```(sh|shell|console)\n(.*?)^```", README.read_text(), re.M | re.S)
    for lang, body in blocks:
        lines = body.replace("\\\n", " ").splitlines()
        if lang == "console":  # only the prompted lines are commands
            lines = [line[2:] for line in lines if line.startswith("$ ")]
        commands += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return commands


def bjc_on_path(directory: Path) -> str:
    """A PATH whose first entry has a `bjc` running this checkout with this interpreter."""
    bin_dir = directory / ".bin"
    bin_dir.mkdir()
    shim = bin_dir / "bjc"
    shim.write_text(
        f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(REPO))} "
        f'exec {shlex.quote(sys.executable)} -m bjc "$@"\n'
    )
    shim.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


def nox_sessions() -> tuple[set[str], list[str]]:
    """The sessions noxfile.py defines and its default ones, read without running nox."""
    tree = ast.parse((REPO / "noxfile.py").read_text())
    defined = {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any("nox.session" in ast.unparse(d) for d in node.decorator_list)
    }
    (default,) = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "nox.options.sessions"
    ]
    return defined, ast.literal_eval(default)


def _check_command(part: str, tmp_path: Path) -> None:
    argv = shlex.split(part, comments=True)
    if argv[:2] == ["pip", "install"]:
        # Installing is not repeated here: into a fresh venv it is slow and needs the
        # package index. `pip install -e .` is checked by its effect, the package of
        # this checkout being importable; another package (nox) is the reader's to get.
        if argv[2:] == ["-e", "."]:
            done = subprocess.run(
                [sys.executable, "-c", "import bjc, bjc.commands.cli; print(bjc.__file__)"],
                capture_output=True, text=True, cwd=tmp_path, check=True,
            )  # fmt: skip
            assert Path(done.stdout.strip()).is_relative_to(REPO)
        return
    if argv[0] == "nox":
        # nox runs this test suite, so running it from the suite would recurse; the
        # sessions the README names must be the ones noxfile.py defines.
        defined, default = nox_sessions()
        wanted = argv[argv.index("-s") + 1 :] if "-s" in argv else default
        assert set(wanted) <= defined, f"{part}: sessions {wanted}, noxfile.py has {defined}"
        return
    if argv[:3] == ["kubectl", "apply", "-k"]:
        # Applying needs a cluster (the e2e tests apply manifests/base to a real
        # kube-apiserver); here kustomize must build the directory.
        if shutil.which("kubectl") is None:
            pytest.skip("kubectl is not installed")
        build = ["kubectl", "kustomize", str(REPO / argv[3])]
        subprocess.run(build, capture_output=True, check=True)
        return
    if argv[:2] == ["docker", "build"]:
        # Building needs an engine (the e2e suite builds the Dockerfile with buildah and
        # runs it on a real kubelet); here the tag must be the image the manifests run.
        deployment = (REPO / "manifests" / "base" / "deployment.yaml").read_text()
        tag = argv[argv.index("-t") + 1]
        assert f"image: {tag}\n" in deployment, f"{part}: the Deployment runs another image"
        assert (REPO / argv[-1] / "Dockerfile").is_file()
        return
    env = {**os.environ, "PATH": bjc_on_path(tmp_path)}
    done = subprocess.run(
        ["bash", "-c", part], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=COMMAND_TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, f"{part!r} exited {done.returncode}:\n{done.stderr[-3000:]}"


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_runs(command, tmp_path):
    """In a temporary directory holding the repository's examples and manifests (a reader
    runs these in a clone), so that what a command writes stays out of the checkout."""
    for name in ("examples", "manifests"):
        (tmp_path / name).symlink_to(REPO / name)
    for part in command.split(" && "):
        _check_command(part, tmp_path)


def test_the_readme_shows_the_quick_start_commands():
    commands = readme_commands()
    assert any(c.startswith("bjc demo") for c in commands)
    assert any(c.endswith("nox") or "nox " in c for c in commands)
    assert any(c.startswith("kubectl apply -k manifests/overlays/example") for c in commands)


# --------------------------------------------------------------------------- links


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to `-`."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    return {github_anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def relative_links(path: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans are not links
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    return [link for link in links if not re.match(r"[a-z]+:", link)]


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_to_existing_files_and_headings(path):
    broken = []
    for link in relative_links(path):
        target, _, anchor = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        if not file.exists():
            broken.append(f"{link}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{link}: no heading #{anchor}")
    assert not broken, f"{path.relative_to(REPO)}: {broken}"


def test_no_document_cites_sections_of_a_spec_outside_the_repository():
    cited = [
        f"{p.relative_to(REPO)}:{n}"
        for p in [*MARKDOWN, *REPO.glob("bjc/**/*.py"), *REPO.glob("tests/**/*.py")]
        if p != Path(__file__)
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"\bSPEC [AB]\b|\bSPEC [AB]\d|shared/SPEC", line)
    ]
    assert not cited, cited
