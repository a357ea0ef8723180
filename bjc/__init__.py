"""bjc: a Kubernetes batch job controller, drop-in compatible with the Go batch-job-controller."""

__version__ = "0.1.0"
