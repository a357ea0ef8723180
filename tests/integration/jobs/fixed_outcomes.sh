#!/bin/sh
# A job for `bjc demo --job-command` whose outcome is fixed by its node, so that a test
# sees every status: demo-node-002 fails, demo-node-004 succeeds without reporting,
# demo-node-005 runs past jobTimeout; every other node reports a result and a file.
set -eu
echo "checking ${NODE_NAME} in execution ${EXECUTION_ID}"
case "$NODE_NAME" in
  demo-node-002) echo "disk check crashed: /var is read-only" >&2; exit 1 ;;
  demo-node-004) echo "done, but nothing reported"; exit 0 ;;
  demo-node-005) exec sleep 600 ;;
esac
bjc report result - <<JSON
{
  "disk_used_ratio": [
    {"value": 0.42, "labels": {"mount": "/"}},
    {"value": 0.73, "labels": {"mount": "/var"}}
  ],
  "failed_checks": [{"value": 0, "labels": {"check": "ntp"}}]
}
JSON
echo "all checks passed on ${NODE_NAME}" | bjc report file - --name report.txt
