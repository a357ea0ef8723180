"""`bjc check-config`: exit codes and output, called directly and as a process."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bjc.commands.checkconfig import main
from tests import go_chart

CONFIG = """\
name: bjc
cronExpression: "42 3 * * *"
reportDirectory: /var/www
podPoolSize: 4
jobNodeSelector: {role: worker}
metrics:
  prefix: bjc
  gauges:
    test:
      help: a test gauge
      labels: [label_a, label_b]
leaderElectionResourceLock: configmapsleases
"""

TEMPLATE = """\
apiVersion: v1
kind: Pod
spec:
  containers:
    - name: job
      image: "busybox:{{ .ExecutionID }}"
"""


def write_configmap(tmp_path: Path, config: str = CONFIG, template: str = TEMPLATE) -> Path:
    path = tmp_path / "configmap.yaml"
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "bjc"},
        "data": {"config.yaml": config, "pod-template.yaml": template},
    }
    path.write_text(yaml.safe_dump(manifest))
    return path


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def _no_report_directory_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPORT_DIRECTORY", raising=False)


def test_valid_configmap_summary(tmp_path: Path) -> None:
    code, out, err = run([str(write_configmap(tmp_path))])
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "configuration is valid"
    assert "  name:            bjc" in lines
    assert any(line.startswith("  cron:            42 3 * * * (At 03:42") for line in lines)
    next_run = next(line for line in lines if line.startswith("  next run:"))
    assert ":42:00" in next_run
    assert "  pod pool size:   4" in lines
    assert "  nodes selector:  role=worker" in lines
    assert "    bjc_test{label_a, label_b, node, executionID}" in lines
    assert "  pod template:    uses .ExecutionID" in lines
    limits = next(line for line in lines if line.startswith("  callback limits:"))
    assert "1000 series per node, 100000 per execution" in limits
    assert "label values up to 1024 characters" in limits
    warning_index = lines.index("warnings:")
    assert "configmapsleases" in lines[warning_index + 1]


def test_unknown_keys_are_warnings_naming_the_closest_known_key(tmp_path: Path) -> None:
    """Valid (exit 0: the Go controller ignores unknown keys), each named with the known key
    it most likely misspells, in the words of the controller's `ConfigWarning` Event."""
    path = tmp_path / "configmap.yaml"
    config = CONFIG + "history: 5\ndeadline: 1m\nextra: 1\n"
    manifest = yaml.safe_load(write_configmap(tmp_path, config).read_text())
    manifest["data"]["config.yml"] = "a stray copy"
    path.write_text(yaml.safe_dump(manifest))
    code, out, err = run([str(path)])
    assert (code, err) == (0, "")
    lines = out.splitlines()
    warnings = [w for w in lines[lines.index("warnings:") + 1 :] if "configmapsleases" not in w]
    assert warnings == [
        "  - config.yaml: history: unknown key ignored (did you mean 'reportHistory'?)",
        "  - config.yaml: deadline: unknown key ignored (did you mean 'startingDeadline'?)",
        "  - config.yaml: extra: unknown key ignored",
        "  - ConfigMap data.config.yml: unknown key ignored (did you mean 'config.yaml'?)",
    ]


def test_valid_pair(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        CONFIG.replace("leaderElectionResourceLock: configmapsleases\n", "")
    )
    (tmp_path / "pod.yaml").write_text(TEMPLATE)
    code, out, err = run(
        ["--config", str(tmp_path / "config.yaml"), "--pod-template", str(tmp_path / "pod.yaml")]
    )
    assert (code, err) == (0, "")
    assert out.startswith("configuration is valid\n")
    assert "warnings:" not in out


def test_every_problem_one_per_line(tmp_path: Path) -> None:
    config = CONFIG.replace("podPoolSize: 4", "podPoolSize: 0").replace("42 3 * * *", "42 3 * *")
    template = TEMPLATE.replace("{{ .ExecutionID }}", "{{ .Tag }}")
    code, out, err = run([str(write_configmap(tmp_path, config, template))])
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert lines == [
        'config.yaml: cronExpression: invalid value "42 3 * *": expected 5 fields '
        "(minute hour day-of-month month day-of-week), got 4",
        "config.yaml: podPoolSize: invalid value 0: must be at least 1",
        "pod-template.yaml: line 6: unsupported template construct '{{ .Tag }}': unknown field "
        ".Tag; only {{ .Namespace }}, {{ .ExecutionID }} and {{ .NodeName }} are supported",
        "configuration is invalid: 3 problems",
    ]


def test_pair_problems_name_the_files(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: bjc\n")
    pod = tmp_path / "p.yaml"
    pod.write_text("kind: Deployment\n")
    code, _, err = run(["--config", str(cfg), "--pod-template", str(pod)])
    assert code == 1
    lines = err.splitlines()
    assert f"{cfg}: cronExpression: required but missing" in lines[0]
    assert any(line.startswith(f'{pod}: kind: invalid value "Deployment"') for line in lines)


def test_missing_file(tmp_path: Path) -> None:
    pod = tmp_path / "p.yaml"
    pod.write_text(TEMPLATE)
    code, _, err = run(["--config", str(tmp_path / "nope.yaml"), "--pod-template", str(pod)])
    assert code == 1
    assert (
        err.splitlines()[0] == f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory"
    )
    code, _, err = run([str(tmp_path / "nope.yaml")])
    assert code == 1


def test_report_directory_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_configmap(tmp_path, CONFIG.replace("reportDirectory: /var/www\n", ""))
    assert run([str(path)])[0] == 1
    monkeypatch.setenv("REPORT_DIRECTORY", "/data")
    code, out, _ = run([str(path)])
    assert code == 0
    assert "  report dir:      /data (keeps 30 executions)" in out.splitlines()


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["a.yaml", "--config", "c.yaml"],
        ["--config", "c.yaml"],
        ["--pod-template", "p.yaml"],
        ["--bogus"],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    code, _, err = run(argv)
    assert code == 2
    assert "usage:" in err


def test_as_a_process(tmp_path: Path) -> None:
    good = write_configmap(tmp_path)
    code = "import sys; from bjc.commands.checkconfig import main; sys.exit(main(sys.argv[1:]))"
    ok = subprocess.run(
        [sys.executable, "-c", code, str(good)], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("configuration is valid")
    bad = write_configmap(tmp_path, CONFIG.replace("podPoolSize: 4", "podPoolSize: -1"))
    fail = subprocess.run(
        [sys.executable, "-c", code, str(bad)], capture_output=True, text=True, check=False
    )
    assert fail.returncode == 1
    assert (
        "config.yaml: podPoolSize: invalid value -1: must be at least 1" in fail.stderr.splitlines()
    )


def test_summary_shows_the_operating_keys(tmp_path: Path) -> None:
    config = CONFIG.replace("podPoolSize: 4", 'podPoolSize: "10%"') + (
        "suspend: true\njobRetries: 2\nmaxFailures: 5%\nstartingDeadline: 10m\n"
        "timeZone: Europe/Zurich\n"
    )
    code, out, err = run([str(write_configmap(tmp_path, config))])
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert "  pod pool size:   10% of the selected nodes (at least 1)" in lines
    assert (
        "  operating:       suspended, job retries 2, max failures 5%, "
        "missed runs caught up within 10m0s"
    ) in lines
    cron = next(line for line in lines if line.startswith("  cron:"))
    assert cron.endswith("Europe/Zurich)")
    assert "+02:00" in out or "+01:00" in out  # the next run in the schedule's zone


def test_every_new_key_is_checked_and_named(tmp_path: Path) -> None:
    config = CONFIG + (
        "suspend: maybe\njobRetries: -1\nmaxFailures: lots\nstartingDeadline: ten\n"
        "timeZone: Mars/Olympus\npodPoolSize: 0%\n"
    )
    code, _, err = run([str(write_configmap(tmp_path, config))])
    assert code == 1
    keys = [line.split(": ")[1] for line in err.splitlines()[:-1]]
    assert sorted(keys) == sorted(
        ["suspend", "jobRetries", "maxFailures", "startingDeadline", "timeZone", "podPoolSize"]
    )


def test_values_quoted_from_the_files_show_control_characters_as_escapes(tmp_path: Path) -> None:
    hostile = "x\\u202eyz\\x9b2J"  # YAML escapes: a right-to-left override, a C1 CSI
    config = CONFIG.replace("name: bjc", f'name: "{hostile}"').replace(
        "reportDirectory: /var/www", f'reportDirectory: "/var/{hostile}"'
    )
    code, _, err = run([str(write_configmap(tmp_path, config))])
    assert code == 1
    assert "x\\u202eyz\\x9b2J" in err and "\u202e" not in err and "\x9b" not in err
    code, out, _ = run([str(write_configmap(tmp_path, config.replace(f'"{hostile}"', "ok", 1)))])
    assert code == 0
    assert "report dir:      /var/x\\u202eyz\\x9b2J" in out and "\u202e" not in out


def test_the_go_charts_config_map_is_accepted(tmp_path: Path) -> None:
    """What the Go controller's Helm chart renders with its defaults starts bjc."""
    path = tmp_path / "configmap.yaml"
    path.write_text(yaml.safe_dump(go_chart.config_map("default")))
    code, out, err = run([str(path)])
    assert code == 0, err
    assert "example-job-controller" in out
