"""Extensions (bjc.config.extensions): loading refuses with the name and why, and a
rendered job pod gets what every extension adds to each of its containers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bjc.config import podspec
from bjc.config.extensions import ExtensionError, load, load_all
from bjc.config.settings import load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "extension"

TEMPLATE = """\
apiVersion: v1
kind: Pod
spec:
  initContainers: [{name: setup, image: busybox}]
  containers:
    - name: main
      image: busybox
      env: [{name: SITE, value: from-the-template}]
"""


@pytest.fixture(autouse=True)
def example_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))


def render(*specs: str, **custom: object) -> dict:
    config, _ = load_config(
        yaml.safe_dump(
            {"name": "b", "cronExpression": "@daily", "reportDirectory": "/r", "custom": custom}
        )
    )
    return podspec.render_pod(
        podspec.PodTemplate.parse(TEMPLATE),
        config=config, namespace="ns", node_name="node-1", execution_id="e1",
        callback_host="10.0.0.1", owner=None, extensions=[load(s) for s in specs],
    )  # fmt: skip


def env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def test_the_example_adds_its_variables_to_every_container() -> None:
    pod = render("bjc_site_env:SiteEnv", site="zurich")
    for container in pod["spec"]["initContainers"] + pod["spec"]["containers"]:
        assert env(container)["SITE"] == "zurich"  # the template's SITE replaced
        assert env(container)["JOB_CONTAINER"] == container["name"]
        assert env(container)["NODE_NAME"] == "node-1"  # bjc's own stay
    names = [e["name"] for e in pod["spec"]["containers"][0]["env"]]
    assert names.count("SITE") == 1


def function(config, node_name, execution_id, service_ip, container):  # type: ignore[no-untyped-def]
    return {"WHERE": f"{node_name}/{execution_id}/{service_ip}"}


def returns_reserved(config, node_name, execution_id, service_ip, container):  # type: ignore[no-untyped-def]
    return {"NODE_NAME": "elsewhere"}


def returns_number(config, node_name, execution_id, service_ip, container):  # type: ignore[no-untyped-def]
    return {"COUNT": 3}


def too_few(config):  # type: ignore[no-untyped-def]
    return {}


def test_a_function_is_an_extension_too() -> None:
    (container,) = render(f"{__name__}:function")["spec"]["containers"]
    assert env(container)["WHERE"] == "node-1/e1/10.0.0.1"


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("no_such_module:x", "extension no_such_module:x: ModuleNotFoundError"),
        ("bjc_site_env:Missing", "extension bjc_site_env:Missing: AttributeError"),
        ("bjc_site_env", "extension bjc_site_env: expected module:object"),
        (f"{__name__}:too_few", "extend_env must take (config, node_name, execution_id"),
    ],
)
def test_a_broken_extension_is_refused_with_its_name(spec: str, error: str) -> None:
    with pytest.raises(ExtensionError) as info:
        load_all([spec], installed=False)
    assert str(info.value).startswith(error) or error in str(info.value), info.value


@pytest.mark.parametrize(
    ("name", "error"),
    [("returns_reserved", "'NODE_NAME': one of bjc's own"), ("returns_number", "not a string")],
)
def test_what_an_extension_returns_is_checked(name: str, error: str) -> None:
    with pytest.raises(ExtensionError) as info:
        render(f"{__name__}:{name}")
    assert f"extension {__name__}:{name}" in str(info.value) and error in str(info.value)
