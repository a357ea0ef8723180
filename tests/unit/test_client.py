"""bjc.client without a server: what it imports, and the errors raised before anything is sent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bjc.client import Client, NotConfigured, report

REPO = Path(__file__).resolve().parents[2]


def test_import_bjc_client_loads_only_the_standard_library() -> None:
    script = (
        "import json, sys; before = set(sys.modules); import bjc.client; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr
    loaded = json.loads(run.stdout)
    assert "bjc.client" in loaded
    assert "aiohttp" not in loaded and "msgspec" not in loaded
    assert {m for m in loaded if m.startswith("bjc")} == {"bjc", "bjc.client"}
    assert [m for m in loaded if m.split(".")[0] not in (*sys.stdlib_module_names, "bjc")] == []


def test_a_missing_url_names_its_variable() -> None:
    client = Client.from_env({"CALLBACK_SERVICE_RESULT_URL": "http://h:8090/report/n/1/result"})
    with pytest.raises(NotConfigured, match=r"^CALLBACK_SERVICE_EVENT_URL is not set"):
        client.event("Reason", "message")
    with pytest.raises(NotConfigured, match=r"^CALLBACK_SERVICE_FILE_URL is not set"):
        client.upload(b"data", "x.txt")


def test_the_module_functions_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CALLBACK_SERVICE_RESULT_URL", raising=False)
    with pytest.raises(NotConfigured, match=r"^CALLBACK_SERVICE_RESULT_URL is not set"):
        report({"x": [{"value": 1}]})
    monkeypatch.setenv("CALLBACK_SERVICE_RESULT_URL", "ftp://h/x?token=s3cret")
    with pytest.raises(NotConfigured) as invalid:
        report({"x": [{"value": 1}]})
    assert str(invalid.value) == (
        "CALLBACK_SERVICE_RESULT_URL: invalid value 'ftp://h/x?token=***': expected an http(s) URL"
    )


def test_bad_arguments_fail_before_sending(tmp_path: Path) -> None:
    client = Client("http://h/r", "http://h/f", "http://h/e")
    with pytest.raises(ValueError, match="type must be 'Normal' or 'Warning'"):
        client.event("Reason", "message", type="Error")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="no such file"):
        client.upload(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="retries"):
        Client(retries=-1)
