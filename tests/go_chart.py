"""What the Go controller's Helm chart renders, for the drop-in tests.

The Go batch-job-controller is installed with its Helm chart (`batch-job-controller`,
version 1.4.9). A team moving to bjc swaps only the image: the chart's ConfigMap,
Deployment, Service, ServiceAccount and RBAC stay as they are. These are the objects
that chart renders with its default values (`name: example-job-controller`), written
out here so the tests can check bjc against them: `bjc check-config` accepts the
ConfigMap (tests/unit/test_checkconfig.py), bjc works under exactly the RBAC rules
(tests/integration/test_go_rights.py, on bjc.sim and the real control plane), and the
whole set deployed with the bjc image runs executions (tests/e2e/test_gochart.py).
"""

from __future__ import annotations

from typing import Any

import yaml

NAME = "example-job-controller"

#: config.yaml of the chart's ConfigMap. `jobImagePullSecrets: {}` is a key the Go
#: controller never reads (its pull secrets are `imagePullSecrets`).
CONFIG_YAML = f"""\
name: {NAME}
jobServiceAccount: ""
jobImagePullSecrets: {{}}
jobNodeSelector: {{}}
cronExpression: "* * * * *"
reportHistory: 10
podPoolSize: 10
runOnStartup: false
callbackServiceName: {NAME}
reportDirectory: /var/www
callbackServicePort: 8090
latestMetricsLabel: false
metrics:
  prefix: {NAME.replace("-", "_")}
  gauges:
    my_metric:
      help: describe my metric
      labels:
        - label_a
        - label_b
"""

POD_TEMPLATE = f"""\
apiVersion: v1
kind: Pod
spec:
  containers:
    - name: test-job
      image: redhat/ubi10:latest
      imagePullPolicy: Always
      command: [/bin/bash, /opt/job/run.sh]
      resources:
        requests: {{cpu: 100m, memory: 64Mi}}
        limits: {{cpu: 100m, memory: 128Mi}}
      volumeMounts:
        - name: {NAME}
          mountPath: /opt/job/run.sh
          subPath: run.sh
  volumes:
    - name: {NAME}
      configMap:
        name: {NAME}
        defaultMode: 420
"""

RUN_SH = """\
#!/bin/bash
curl -s -X POST -H 'Content-Type: application/json' \\
  -d '{"my_metric": [{"value": 1, "labels": {"label_a": "a", "label_b": "b"}}]}' \\
  "${CALLBACK_SERVICE_RESULT_URL}"
echo "a file" > /tmp/file.txt
curl -s -X POST -F "file=@/tmp/file.txt" "${CALLBACK_SERVICE_FILE_URL}"
curl -s -X POST -H 'Content-Type: application/json' \\
  -d '{"reason": "Test", "message": "a test event"}' "${CALLBACK_SERVICE_EVENT_URL}"
"""

#: the chart's Role in the release namespace
ROLE_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": [""],
        "resources": ["pods"],
        "verbs": ["list", "watch", "get", "create", "deletecollection"],
    },
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["list", "watch", "get"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": [""],
        "resources": ["configmaps", "events"],
        "verbs": ["get", "list", "watch", "update", "create"],
    },
    {"apiGroups": ["apps"], "resources": ["replicasets", "deployments"], "verbs": ["get"]},
    {"apiGroups": ["apps.openshift.io"], "resources": ["deploymentconfigs"], "verbs": ["get"]},
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
    },
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
]

#: the chart's ClusterRole `<name>-list-nodes`, bound cluster-wide
CLUSTER_ROLE_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "get", "watch"]},
]


def config_map(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": NAME, "namespace": namespace},
        "data": {"config.yaml": CONFIG_YAML, "pod-template.yaml": POD_TEMPLATE, "run.sh": RUN_SH},
    }


def rbac(namespace: str) -> list[dict[str, Any]]:
    """The ServiceAccount, Role, ClusterRole and their bindings."""
    rbac_v1 = "rbac.authorization.k8s.io/v1"
    subject = [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}]
    cluster_role = f"{NAME}-list-nodes"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME, namespace)},
        {
            "apiVersion": rbac_v1,
            "kind": "Role",
            "metadata": _meta(f"{NAME}-role", namespace),
            "rules": ROLE_RULES,
        },
        {
            "apiVersion": rbac_v1,
            "kind": "RoleBinding",
            "metadata": _meta(f"{NAME}-role", namespace),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": f"{NAME}-role",
            },
            "subjects": subject,
        },
        {
            "apiVersion": rbac_v1,
            "kind": "ClusterRole",
            "metadata": {"name": cluster_role},
            "rules": CLUSTER_ROLE_RULES,
        },
        {
            "apiVersion": rbac_v1,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": cluster_role},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": cluster_role,
            },
            "subjects": subject,
        },
    ]


def deployment(namespace: str, image: str) -> dict[str, Any]:
    """The chart's Deployment, with `image` in place of the Go controller's."""
    labels = {"name": NAME, "app": NAME}
    probe = {"httpGet": {"path": "/readyz", "port": 9152}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(NAME, namespace),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"name": NAME}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": "9153",
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "serviceAccountName": NAME,
                    "containers": [
                        {
                            "name": NAME,
                            "image": image,
                            "imagePullPolicy": "Always",
                            "env": [
                                {"name": "NAMESPACE", "value": namespace},
                                {"name": "CONFIG_MAP_NAME", "value": NAME},
                                {
                                    "name": "POD_IP",
                                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                                },
                            ],
                            "ports": [
                                {"containerPort": 8080, "name": "public"},
                                {"containerPort": 8090, "name": "private"},
                                {"containerPort": 9152, "name": "health"},
                                {"containerPort": 9153, "name": "metrics"},
                            ],
                            "startupProbe": {
                                **probe,
                                "initialDelaySeconds": 15,
                                "periodSeconds": 10,
                                "failureThreshold": 3,
                            },
                            "readinessProbe": probe,
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": 9152},
                                "periodSeconds": 10,
                                "timeoutSeconds": 1,
                            },
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "128Mi"},
                                "limits": {"cpu": "200m", "memory": "512Mi"},
                            },
                            "volumeMounts": [
                                {"name": "reports", "mountPath": "/var/www"},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "reports", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }


def service(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(NAME, namespace),
        "spec": {
            "type": "ClusterIP",
            "selector": {"name": NAME},
            "ports": [
                {"name": "public", "port": 8080, "targetPort": 8080},
                {"name": "internal", "port": 8090, "targetPort": 8090},
                {"name": "metrics", "port": 9153, "targetPort": 9153},
            ],
        },
    }


def manifest(namespace: str, image: str) -> str:
    """Every object, as one multi-document YAML for `kubectl apply -f -`."""
    objects = [config_map(namespace), *rbac(namespace), deployment(namespace, image)]
    return yaml.safe_dump_all([*objects, service(namespace)])


def _meta(name: str, namespace: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace}
