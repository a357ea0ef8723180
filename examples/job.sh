#!/bin/sh
# Example job pod script: reports a result, uploads files and creates events through
# the callback API. Works against bjc, the Go batch-job-controller and `bjc mock`.
# The controller provides NODE_NAME, EXECUTION_ID and the CALLBACK_SERVICE_*_URL
# variables; with `callbackAuth: token` the URLs already carry `?token=...`.
set -eu

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Append a query parameter whether or not the URL already has a query (token auth).
with_query() {
  case "$1" in
    *\?*) printf '%s&%s' "$1" "$2" ;;
    *) printf '%s?%s' "$1" "$2" ;;
  esac
}

# 1. The result: gauge suffix -> list of {value, labels} (labels as configured).
curl -fsS -X POST -H 'Content-Type: application/json' \
  --data-binary @- "$CALLBACK_SERVICE_RESULT_URL" <<JSON
{
  "test": [
    {"value": 1.0, "labels": {"label_a": "AAA", "label_b": "BBB"}},
    {"value": 2.554, "labels": {"label_a": "AAA2", "label_b": "BBB2"}}
  ]
}
JSON

# 2. Files, saved as <node>-<name> next to the result.
echo "checked on ${NODE_NAME} in execution ${EXECUTION_ID}" > "$work/summary.txt"
curl -fsS -X POST -H 'Content-Type: text/plain' --data-binary @"$work/summary.txt" \
  "$(with_query "$CALLBACK_SERVICE_FILE_URL" name=summary.txt)"

echo "<html><body><h1>${NODE_NAME}</h1></body></html>" > "$work/report.html"
curl -fsS -X POST -H 'Content-Type: text/html' \
  -H 'Content-Disposition: attachment; filename="report.html"' \
  --data-binary @"$work/report.html" "$CALLBACK_SERVICE_FILE_URL"

# Several files at once as a multipart form.
echo "line 1" > "$work/a.log"
echo "line 2" > "$work/b.log"
curl -fsS -X POST -F "file=@$work/a.log" -F "file=@$work/b.log" "$CALLBACK_SERVICE_FILE_URL"

# 3. Kubernetes events regarding this job pod; the message is formatted with args.
curl -fsS -X POST -H 'Content-Type: application/json' \
  -d '{"warning": false, "reason": "TestReason", "message": "test message"}' \
  "$CALLBACK_SERVICE_EVENT_URL"
curl -fsS -X POST -H 'Content-Type: application/json' \
  -d '{"warning": true, "reason": "TestReason", "message": "test message: %s", "args": ["a1"]}' \
  "$CALLBACK_SERVICE_EVENT_URL"
