"""Kubernetes access: the API client and its credentials, object types, the job pod
watch, Events, the Lease elector and the controller pod's own labels.

Knows nothing of executions, results or configuration: the bottom layer of bjc.
"""
