#!/usr/bin/env bash
# The pod-crash runbook's manual steps (runbooks/pod-crash.md) with real kubectl, as an on-call engineer
# would type them, timed one by one: `STEP <name> <milliseconds>` lines on stdout (the commands' own output
# goes to stderr, like a terminal the engineer reads).
#
#   KUBECONFIG=... bench/manual_pod_crash.sh NAMESPACE DEPLOYMENT
#
# Identify: list the pods, describe a crashing one, read its previous log, check whether a new revision
# started the crashes. Recover: roll back (the action the evidence supports for a bad rollout, the same
# one the runbook picks), then wait until every replica is ready.
set -euo pipefail
ns="$1"
dep="$2"
kubectl="${KUBECTL:-kubectl}"

now() { date +%s%N; }
ms_since() { echo $(( ($(now) - $1) / 1000000 )); }
step() {  # step NAME COMMAND...: run, time, echo the output to stderr
  local name="$1"; shift
  local t0; t0=$(now)
  "$@" >&2
  echo "STEP $name $(ms_since "$t0")"
}

t0=$(now)
pods=$("$kubectl" get pods -n "$ns" -l "app=$dep" --no-headers)
echo "STEP get_pods $(ms_since "$t0")"
echo "$pods" >&2
# A crashing pod: restarts > 0 or a status other than Running (what the engineer spots in the listing).
pod=$(echo "$pods" | awk '$4 != "0" || $3 != "Running" {print $1; exit}')
if [ -z "$pod" ]; then
  echo "no crashing pod of $ns/$dep" >&2
  exit 1
fi
step describe_pod "$kubectl" describe pod "$pod" -n "$ns"
step logs_previous "$kubectl" logs "$pod" -n "$ns" --previous --tail=200
step rollout_history "$kubectl" rollout history "deployment/$dep" -n "$ns"
step rollout_undo "$kubectl" rollout undo "deployment/$dep" -n "$ns"
step rollout_status "$kubectl" rollout status "deployment/$dep" -n "$ns" --timeout=180s
