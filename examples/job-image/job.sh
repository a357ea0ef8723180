#!/bin/sh
# Example job: checks this node's disks and reports through `bjc report` (no curl, no
# hand-written HTTP). Its result fits the gauges of `bjc demo`'s example config:
#   disk_used_ratio{mount}  share of each checked file system that is used
#   failed_checks{check}    1 for each check that failed, else 0
# The controller sets NODE_NAME, EXECUTION_ID and the CALLBACK_SERVICE_*_URL variables;
# `bjc report` reads the URLs from there and retries while the controller is unreachable.
#
# Settings: CHECK_MOUNTS (space-separated mount points, default /; in a real job pod,
# mount the node's file systems with hostPath volumes and list them here) and
# DISK_LIMIT_PERCENT (default 90).
#
# `bjc report` exit codes: 0 delivered, 2 usage, 3 refused (4xx, reason on stderr),
# 4 unreachable (gave up after retries). With `set -e` any failure fails the job,
# which the controller records as an error for this node.
set -eu

mounts=${CHECK_MOUNTS:-/}
limit=${DISK_LIMIT_PERCENT:-90}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. Measure. `df -P` prints one line per mount: used and available 1K-blocks.
ratios=""
full=""
for mount in $mounts; do
  ratio=$(df -P "$mount" | awk 'NR == 2 { t = $3 + $4; printf "%.3f", (t > 0 ? $3 / t : 0) }')
  ratios="$ratios${ratios:+, }{\"value\": $ratio, \"labels\": {\"mount\": \"$mount\"}}"
  if awk -v r="$ratio" -v l="$limit" 'BEGIN { exit !(r * 100 >= l) }'; then
    full="$full${full:+ }$mount"
  fi
done
disk_failed=0
[ -z "$full" ] || disk_failed=1
tmp_failed=0
{ echo probe > "$work/probe" && [ "$(cat "$work/probe")" = probe ]; } || tmp_failed=1

# 2. The result: gauge suffix -> list of {value, labels}, read from stdin ("-").
bjc report result - <<JSON
{
  "disk_used_ratio": [$ratios],
  "failed_checks": [
    {"value": $disk_failed, "labels": {"check": "disk"}},
    {"value": $tmp_failed, "labels": {"check": "tmp"}}
  ]
}
JSON

# 3. Files, stored next to the result as <node>-<name>: a file under its own name,
#    and a command's output from stdin under a name of our choosing.
# shellcheck disable=SC2086  # one argument per mount
df -P $mounts > "$work/df.txt"
bjc report file "$work/df.txt"
uname -a | bjc report file - --name uname.txt

# 4. A Kubernetes Event regarding this job pod; the message is formatted with the args.
#    An event is nice to have: a refusal (exit 3) is logged, anything else fails the job.
if [ -n "$full" ]; then
  set -- --type Warning DiskFull "%s over %s%% full" "$full" "$limit"
else
  set -- ChecksPassed "node %s: disks below %s%%" "$NODE_NAME" "$limit"
fi
bjc report event --action Checked "$@" || {
  code=$?
  [ "$code" -eq 3 ] || exit "$code"
  echo "event refused; carrying on" >&2
}
echo "checked ${mounts} on ${NODE_NAME} in execution ${EXECUTION_ID}"
