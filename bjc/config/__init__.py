"""Configuration: `config.yaml`, the pod template and the environment, checked at load time.

Pure: nothing here talks to Kubernetes or logs. The lowest layer but one of bjc
(only `bjc.kube.objects`' types are below it); every other package may use it.
"""
