"""Pod template validation and job pod rendering (Go's enforced fields, jobTimeout, token URLs)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import yaml

from bjc.config.podspec import (
    EXECUTION_LABEL,
    OWNER_LABEL,
    RESERVED_ENV,
    PodTemplate,
    callback_url,
    job_pod_name,
    render_pod,
)
from bjc.config.settings import Config, PullSecret, load_config
from bjc.config.values import ConfigError
from bjc.kube.objects import OwnerReference

TEMPLATE = """\
apiVersion: v1
kind: Pod
metadata:
  labels:
    app: batch-job
    node: "{{ .NodeName }}"
  annotations:
    note: "run {{.ExecutionID}} in {{ .Namespace }}"
spec:
  serviceAccountName: template-sa
  imagePullSecrets: [{name: template-secret}]
  restartPolicy: Never
  initContainers:
    - name: prepare
      image: busybox
      env:
        - name: NODE_NAME
          value: overridden
  containers:
    - name: job
      image: "registry/job:{{ .ExecutionID }}"
      args: ["--node", "{{ .NodeName }}"]
      env:
        - name: KEEP_ME
          value: "1"
        - name: CALLBACK_SERVICE_RESULT_URL
          value: http://elsewhere
        - name: FROM_FIELD
          valueFrom:
            fieldRef: {fieldPath: status.hostIP}
        - name: EXECUTION_ID
          value: old
    - name: sidecar
      image: busybox
"""


def make_config(**overrides: Any) -> Config:
    doc = {
        "name": "bjc",
        "cronExpression": "@daily",
        "reportDirectory": "/r",
        "metrics": {"prefix": "bjc"},
        **overrides,
    }
    return load_config(yaml.safe_dump(doc))[0]


def render(
    template_text: str = TEMPLATE, *, token: str | None = None, owner: Any = None, **cfg: Any
):
    return render_pod(
        PodTemplate.parse(template_text),
        config=make_config(**cfg),
        namespace="jobs",
        node_name="Worker-1.example.com",
        execution_id="202405151020",
        callback_host="10.0.0.7",
        owner=owner,
        token=token,
    )


def env_of(container: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(e["name"], e.get("value", e.get("valueFrom"))) for e in container["env"]]


EXPECTED_OURS = [
    ("EXECUTION_ID", "202405151020"),
    ("NAMESPACE", "jobs"),
    ("NODE_NAME", "Worker-1.example.com"),
    ("CALLBACK_SERVICE_NAME", "10.0.0.7"),
    ("CALLBACK_SERVICE_PORT", "8090"),
    (
        "CALLBACK_SERVICE_RESULT_URL",
        "http://10.0.0.7:8090/report/Worker-1.example.com/202405151020/result",
    ),
    (
        "CALLBACK_SERVICE_FILE_URL",
        "http://10.0.0.7:8090/report/Worker-1.example.com/202405151020/file",
    ),
    (
        "CALLBACK_SERVICE_EVENT_URL",
        "http://10.0.0.7:8090/report/Worker-1.example.com/202405151020/event",
    ),
]


# ----------------------------------------------------------------------------- naming


def test_job_pod_name() -> None:
    assert (
        job_pod_name("bjc", "node-1.example.com", "202405151020") == "bjc-job-node-1-202405151020"
    )
    assert job_pod_name("bjc", "Worker-1", "202405151020") == "bjc-job-worker-1-202405151020"
    longest = job_pod_name("a" * 63, "b" * 63 + ".x", "202405151020")
    assert len(longest) == 144


def test_label_constants() -> None:
    assert OWNER_LABEL == "batch-job-controller.bakito.github.com/owner"
    assert EXECUTION_LABEL == "batch-job-controller.bakito.github.com/execution-id"
    assert RESERVED_ENV == tuple(name for name, _ in EXPECTED_OURS)


def test_callback_url() -> None:
    assert callback_url("svc", 8090, "n1", "1", "result") == "http://svc:8090/report/n1/1/result"
    assert callback_url("fd00::1", 80, "n", "1", "file") == "http://[fd00::1]:80/report/n/1/file"
    assert (
        callback_url("h", 1, "n", "1", "event", "a b/c")
        == "http://h:1/report/n/1/event?token=a%20b%2Fc"
    )
    # a retry is marked; the first attempt's URL stays the Go controller's
    assert (
        callback_url("h", 1, "n", "1", "result", None, 2) == "http://h:1/report/n/1/result?retry=2"
    )
    assert (
        callback_url("h", 1, "n", "1", "file", "t", 1)
        == "http://h:1/report/n/1/file?retry=1&token=t"
    )
    assert callback_url("h", 1, "n", "1", "file", "t", 0) == "http://h:1/report/n/1/file?token=t"


# ----------------------------------------------------------------------------- rendering


def test_enforced_metadata() -> None:
    pod = render()
    meta = pod["metadata"]
    assert meta["name"] == "bjc-job-worker-1-202405151020"
    assert meta["namespace"] == "jobs"
    assert meta["labels"] == {
        "app": "batch-job",
        "node": "Worker-1.example.com",
        EXECUTION_LABEL: "202405151020",
        OWNER_LABEL: "bjc",
    }
    assert meta["annotations"] == {"note": "run 202405151020 in jobs"}
    assert "ownerReferences" not in meta


def test_template_fields_substituted() -> None:
    container = render()["spec"]["containers"][0]
    assert container["image"] == "registry/job:202405151020"
    assert container["args"] == ["--node", "Worker-1.example.com"]


def test_enforced_spec() -> None:
    spec = render(jobServiceAccount="job-sa", jobImagePullSecrets=[{"name": "regcred"}])["spec"]
    assert spec["nodeName"] == "Worker-1.example.com"
    assert spec["restartPolicy"] == "Never"
    assert spec["serviceAccountName"] == "job-sa"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert "activeDeadlineSeconds" not in spec


def test_empty_service_account_and_secrets_remove_template_values_like_go() -> None:
    spec = render()["spec"]
    assert "serviceAccountName" not in spec
    assert "imagePullSecrets" not in spec


def test_restart_policy_forced() -> None:
    pod = render(TEMPLATE.replace("restartPolicy: Never", "restartPolicy: Always"))
    assert pod["spec"]["restartPolicy"] == "Never"


def test_env_of_containers_and_init_containers() -> None:
    spec = render()["spec"]
    (init,) = spec["initContainers"]
    job, sidecar = spec["containers"]
    assert env_of(init) == EXPECTED_OURS
    assert env_of(sidecar) == EXPECTED_OURS
    assert env_of(job) == [
        ("KEEP_ME", "1"),
        ("FROM_FIELD", {"fieldRef": {"fieldPath": "status.hostIP"}}),
        *EXPECTED_OURS,
    ]


def test_token_is_appended_to_the_three_urls() -> None:
    container = render(token="s3cr3t")["spec"]["containers"][0]
    env = dict(env_of(container))
    for route in ("RESULT", "FILE", "EVENT"):
        assert env[f"CALLBACK_SERVICE_{route}_URL"].endswith(f"/{route.lower()}?token=s3cr3t")
    assert env["CALLBACK_SERVICE_NAME"] == "10.0.0.7"


def test_callback_port_from_config() -> None:
    env = dict(env_of(render(callbackServicePort=9999)["spec"]["containers"][0]))
    assert env["CALLBACK_SERVICE_PORT"] == "9999"
    assert env["CALLBACK_SERVICE_FILE_URL"].startswith("http://10.0.0.7:9999/report/")


@pytest.mark.parametrize(("timeout", "seconds"), [("30m", 1800), ("1.5s", 2), ("100ms", 1)])
def test_job_timeout_sets_active_deadline(timeout: str, seconds: int) -> None:
    assert render(jobTimeout=timeout)["spec"]["activeDeadlineSeconds"] == seconds


def test_owner_reference_forms() -> None:
    expected = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "bjc", "uid": "u-1"}
    as_ref = OwnerReference(api_version="apps/v1", kind="Deployment", name="bjc", uid="u-1")
    as_object = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "bjc", "uid": "u-1"},
    }
    as_snake = {
        "api_version": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "bjc", "uid": "u-1"},
    }
    for owner in (as_ref, expected, as_object, as_snake):
        assert render(owner=owner)["metadata"]["ownerReferences"] == [expected]


def test_owner_reference_replaces_same_owner_keeps_others() -> None:
    template = TEMPLATE.replace(
        "metadata:\n",
        "metadata:\n  ownerReferences:\n"
        "    - {apiVersion: v1, kind: ConfigMap, name: other, uid: u-9}\n"
        "    - {apiVersion: apps/v1, kind: Deployment, name: bjc, uid: u-old}\n",
    )
    owner = OwnerReference(
        api_version="apps/v1", kind="Deployment", name="bjc", uid="u-1", controller=True
    )
    refs = render(template, owner=owner)["metadata"]["ownerReferences"]
    assert refs == [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "u-9"},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "bjc",
            "uid": "u-1",
            "controller": True,
        },
    ]


def test_renders_are_independent() -> None:
    template = PodTemplate.parse(TEMPLATE)
    cfg = make_config()
    kwargs: dict[str, Any] = {"config": cfg, "namespace": "ns", "callback_host": "h", "owner": None}
    a = render_pod(template, node_name="a", execution_id="1", **kwargs)
    a["spec"]["containers"][0]["env"].clear()
    a["metadata"]["labels"]["x"] = "y"
    b = render_pod(template, node_name="b", execution_id="2", **kwargs)
    assert len(b["spec"]["containers"][0]["env"]) == 2 + len(RESERVED_ENV)
    assert "x" not in b["metadata"]["labels"]
    assert b["spec"]["containers"][0]["image"] == "registry/job:2"


def test_minimal_template_gets_metadata_and_env() -> None:
    pod = render("apiVersion: v1\nkind: Pod\nspec:\n  containers: [{name: c, image: i}]\n")
    assert pod["metadata"]["labels"] == {EXECUTION_LABEL: "202405151020", OWNER_LABEL: "bjc"}
    assert env_of(pod["spec"]["containers"][0]) == EXPECTED_OURS


def test_json_template() -> None:
    text = (
        '{"apiVersion": "v1", "kind": "Pod", "spec": {"containers": '
        '[{"name": "c", "image": "i", "args": ["{{ .NodeName }}"]}]}}'
    )
    assert render(text)["spec"]["containers"][0]["args"] == ["Worker-1.example.com"]


# ----------------------------------------------------------------------------- injection safety


@pytest.mark.parametrize(
    "evil",
    [
        'x"\n    securityContext: {privileged: true}\n#',
        "x\n- name: injected\n  image: evil",
        "x: {privileged: true}",
        "'; rm -rf / #",
        "{{ .Namespace }}",
    ],
)
def test_values_cannot_inject_yaml(evil: str) -> None:
    template = PodTemplate.parse(TEMPLATE)
    pod = render_pod(
        template,
        config=make_config(),
        namespace="jobs",
        node_name=evil,
        execution_id="1",
        callback_host="h",
        owner=None,
    )
    job, _sidecar = pod["spec"]["containers"]
    assert job["args"] == ["--node", evil]
    assert set(job) == {"name", "image", "args", "env"}
    assert pod["metadata"]["labels"]["node"] == evil
    assert [c["name"] for c in pod["spec"]["containers"]] == ["job", "sidecar"]


def test_unquoted_reference_stays_a_string() -> None:
    text = (
        "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: c\n    image: i\n"
        "    env:\n    - name: ID\n      value: {{ .ExecutionID }}\n"
        "    - name: N\n      value: {{.NodeName}}\n"
    )
    env = dict(env_of(render(text)["spec"]["containers"][0]))
    assert env["ID"] == "202405151020"
    assert env["N"] == "Worker-1.example.com"


def test_reference_in_a_key() -> None:
    text = TEMPLATE.replace("app: batch-job", "node-{{ .ExecutionID }}: here")
    assert render(text)["metadata"]["labels"]["node-202405151020"] == "here"


# ----------------------------------------------------------------------------- template errors


@pytest.mark.parametrize(
    ("snippet", "reason"),
    [
        ("{{ .Foo }}", "unknown field .Foo"),
        ("{{ .nodeName }}", "unknown field .nodeName"),
        ("{{ if .NodeName }}x{{ end }}", "'if' is not supported"),
        ("{{ range .X }}", "'range' is not supported"),
        ("{{ .NodeName | upper }}", "pipelines are not supported"),
        ("{{- .NodeName }}", "trim markers"),
        ("{{ .NodeName -}}", "trim markers"),
        ("{{/* c */}}", "comments"),
        ("{{ }}", "empty action"),
        ('{{ printf "%s" .NodeName }}', "'printf' is not supported"),
        ("{{ $x := 1 }}", "'$x' is not supported"),
    ],
)
def test_unsupported_constructs(snippet: str, reason: str) -> None:
    text = TEMPLATE.replace('"{{ .NodeName }}"', f"'{snippet}'")
    with pytest.raises(ConfigError) as info:
        PodTemplate.parse(text)
    problem = info.value.problems[0]
    assert problem.startswith("line 6: unsupported template construct")
    assert reason in problem
    assert "{{ .Namespace }}, {{ .ExecutionID }} and {{ .NodeName }}" in problem


def test_every_bad_construct_is_reported() -> None:
    text = TEMPLATE.replace("{{ .NodeName }}", "{{ .A }}").replace("{{ .ExecutionID }}", "{{ .B }}")
    with pytest.raises(ConfigError) as info:
        PodTemplate.parse(text)
    assert len(info.value.problems) == 3
    assert ".A" in info.value.problems[0] and ".B" in info.value.problems[1]


def test_unclosed_action() -> None:
    with pytest.raises(ConfigError, match=r"line 3: unclosed template action .*missing '}}'"):
        PodTemplate.parse("apiVersion: v1\nkind: Pod\nmetadata: {name: '{{ .NodeName'}\n")


def test_lone_closing_braces_are_text_like_go() -> None:
    text = TEMPLATE.replace('args: ["--node", "{{ .NodeName }}"]', 'args: [\'{"a": {"b": 1}}\']')
    assert render(text)["spec"]["containers"][0]["args"] == ['{"a": {"b": 1}}']


POD = "apiVersion: v1\nkind: Pod\n"
ONE = "containers: [{name: c, image: i}]"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n", "expected a Pod manifest (a mapping), got a list"),
        (
            "apiVersion: v1\nkind: Deployment\nspec: {containers: [{name: c, image: i}]}\n",
            'kind: invalid value "Deployment": must be Pod',
        ),
        (
            "apiVersion: apps/v1\nkind: Pod\nspec: {containers: [{name: c, image: i}]}\n",
            'apiVersion: invalid value "apps/v1": must be v1',
        ),
        ("apiVersion: v1\nkind: Pod\n", "spec: required but missing"),
        ("apiVersion: v1\nkind: Pod\nspec: {}\n", "spec.containers: required but missing"),
        ("apiVersion: v1\nkind: Pod\nspec: {containers: []}\n", "at least one container"),
        (
            "apiVersion: v1\nkind: Pod\nspec: {containers: [{name: c}]}\n",
            "spec.containers[0].image: required but missing",
        ),
        (
            "apiVersion: v1\nkind: Pod\nspec: {containers: [{image: i}]}\n",
            "spec.containers[0].name: required but missing",
        ),
        (
            "apiVersion: v1\nkind: Pod\nspec: {containers: [x]}\n",
            'spec.containers[0]: invalid value "x"',
        ),
        (
            POD + "spec: {" + ONE + ", initContainers: [{name: p}]}\n",
            "spec.initContainers[0].image: required but missing",
        ),
        (
            POD + "spec: {containers: [{name: c, image: i, env: [{value: x}]}]}\n",
            "spec.containers[0].env[0].name: required but missing",
        ),
        (
            POD + "spec: {containers: [{name: c, image: i, env: [{name: A, value: 5}]}]}\n",
            "spec.containers[0].env[0].value: invalid value 5",
        ),
        (
            POD + "metadata: {labels: {a: 1}}\nspec: {" + ONE + "}\n",
            "metadata.labels.a: invalid value 1",
        ),
        ("apiVersion: v1\nkind: Pod\nspec: [\n", "invalid YAML at line"),
        ("kind: Pod\n---\nkind: Pod\n", "expected one YAML document"),
        ("", "expected one YAML document"),
    ],
)
def test_template_not_a_pod(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        PodTemplate.parse(text)
    assert any(message in p for p in info.value.problems), info.value.problems


def test_problem_shows_reference_not_placeholder() -> None:
    text = "apiVersion: v1\nkind: '{{ .NodeName }}'\nspec: {containers: [{name: c, image: i}]}\n"
    with pytest.raises(ConfigError) as info:
        PodTemplate.parse(text)
    assert info.value.problems == ['kind: invalid value "{{ .NodeName }}": must be Pod']


def test_template_warnings_for_overridden_fields() -> None:
    text = TEMPLATE.replace(
        "restartPolicy: Never", "restartPolicy: OnFailure\n  nodeName: n1"
    ).replace("metadata:\n", "metadata:\n  name: fixed\n")
    warnings = PodTemplate.parse(text).warnings
    assert len(warnings) == 3
    assert any("restartPolicy" in w for w in warnings)
    assert any("nodeName" in w for w in warnings)
    assert any("metadata.name" in w for w in warnings)


def test_fields_used() -> None:
    assert PodTemplate.parse(TEMPLATE).fields_used == {"NodeName", "ExecutionID", "Namespace"}


def test_config_pull_secret_struct_used_by_render() -> None:
    secrets = [PullSecret(name="a"), PullSecret(name="b")]
    cfg = msgspec.structs.replace(make_config(), job_image_pull_secrets=secrets)
    pod = render_pod(
        PodTemplate.parse(TEMPLATE),
        config=cfg,
        namespace="n",
        node_name="x",
        execution_id="1",
        callback_host="h",
        owner=None,
    )
    assert pod["spec"]["imagePullSecrets"] == [{"name": "a"}, {"name": "b"}]
