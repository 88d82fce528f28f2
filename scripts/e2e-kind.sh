#!/usr/bin/env bash
# End-to-end on a real Kubernetes API (kind), for hosts with Docker:
#   1. create a kind cluster (its own kubeconfig in a temp dir: your ~/.kube/config is never touched),
#   2. build the image and load it into the cluster,
#   3. install the Prometheus Operator CRDs our monitoring objects use, create the Secrets,
#      apply deployments/k8s/overlays/kind and wait for every rollout,
#   4. smoke-test the installation through port-forwards (receiver health, metrics and bearer-token check;
#      the worker's Kubernetes work pool on the in-cluster Prefect server),
#   5. run the end-to-end tests with KUBECONFIG pointing at kind.
# The tests select their cluster only through the kubeconfig: tests/conftest.py's `sandbox` fixture describes
# the cluster of K8S_RUNBOOKS_TEST_KUBECONFIG (set here to $KUBECONFIG) instead of starting a sandbox, and
# sandbox-only tests (fault switch, process-level checks) skip themselves.
#
# Usage: scripts/e2e-kind.sh [pytest args...]      (default: the e2e test directories below)
# Env:   KIND_CLUSTER (k8s-runbooks-e2e), KEEP_CLUSTER=1 (leave it running), PYTHON (.venv/bin/python),
#        PROM_OPERATOR_VERSION (v0.80.1)
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${KIND_CLUSTER:-k8s-runbooks-e2e}"
IMAGE="k8s-runbooks:dev"
NAMESPACE="k8s-runbooks"
PYTHON="${PYTHON:-.venv/bin/python}"
PROM_OPERATOR_VERSION="${PROM_OPERATOR_VERSION:-v0.80.1}"
E2E_TESTS=(tests/flows tests/cli tests/drills tests/deploy tests/manifests)

die() { echo "e2e-kind: $*" >&2; exit 2; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }
need docker "install Docker (this script builds the image)"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need openssl "apt-get install openssl"
need curl "apt-get install curl"
[ -x "$PYTHON" ] || die "$PYTHON not found: run 'make venv' first (or set PYTHON)"

workdir="$(mktemp -d)"
export KUBECONFIG="$workdir/kubeconfig"

diagnose() {
  echo "---- diagnostics (${NAMESPACE} and shop) ----" >&2
  kubectl get pods,pvc,events -n "$NAMESPACE" -o wide >&2 || true
  kubectl get pods -n shop -o wide >&2 || true
  for deploy in k8s-runbooks-receiver k8s-runbooks-worker prefect-server; do
    kubectl logs -n "$NAMESPACE" "deploy/$deploy" --tail=80 >&2 || true
  done
}

forward_pids=()
cleanup() {
  local rc=$?
  for pid in "${forward_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ "$rc" -ne 0 ]; then diagnose; fi
  if [ "${KEEP_CLUSTER:-0}" = 1 ]; then
    echo "e2e-kind: cluster '$CLUSTER' kept; kubeconfig: kind get kubeconfig --name $CLUSTER" >&2
  else
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  rm -rf "$workdir"
  exit "$rc"
}
trap cleanup EXIT

echo "==> kind cluster $CLUSTER"
if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --wait 180s
else
  kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"
fi

echo "==> image $IMAGE"
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

echo "==> Prometheus Operator CRDs ($PROM_OPERATOR_VERSION) for PrometheusRule, ServiceMonitor, AlertmanagerConfig"
crd_base="https://raw.githubusercontent.com/prometheus-operator/prometheus-operator/${PROM_OPERATOR_VERSION}/example/prometheus-operator-crd"
for crd in prometheusrules servicemonitors alertmanagerconfigs; do
  kubectl apply --server-side -f "${crd_base}/monitoring.coreos.com_${crd}.yaml" >/dev/null
done
kubectl wait --for condition=established --timeout=60s \
  crd/prometheusrules.monitoring.coreos.com crd/servicemonitors.monitoring.coreos.com \
  crd/alertmanagerconfigs.monitoring.coreos.com

echo "==> namespace and secrets"
kubectl apply -f deployments/k8s/base/namespace.yaml
receiver_token="$(openssl rand -hex 24)"
kubectl -n "$NAMESPACE" create secret generic k8s-runbooks-receiver \
  --from-literal=token="$receiver_token" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NAMESPACE" create secret generic prefect-postgres \
  --from-literal=password="$(openssl rand -hex 24)" --dry-run=client -o yaml | kubectl apply -f -
prefect_auth="admin:$(openssl rand -hex 24)"  # the server's API auth string (HTTP basic); every client sends it
kubectl -n "$NAMESPACE" create secret generic prefect-api-auth \
  --from-literal=PREFECT_API_AUTH_STRING="$prefect_auth" --dry-run=client -o yaml | kubectl apply -f -

echo "==> apply overlays/kind"
kubectl apply -k deployments/k8s/overlays/kind
kubectl -n "$NAMESPACE" rollout status statefulset/prefect-postgres --timeout=300s
for deploy in prefect-server k8s-runbooks-receiver k8s-runbooks-worker; do
  kubectl -n "$NAMESPACE" rollout status "deployment/$deploy" --timeout=300s
done
for deploy in checkout payments; do
  kubectl -n shop rollout status "deployment/$deploy" --timeout=180s
done

# Port-forwards reach the pods directly (the receiver's NetworkPolicy admits only monitoring and its namespace).
forward() {  # forward SERVICE PORT: sets FORWARD_PORT (a free local port); cleanup stops the kubectl process
  local log="$workdir/forward-$1.log"
  FORWARD_PORT=""
  kubectl -n "$NAMESPACE" port-forward "service/$1" ":$2" >"$log" 2>&1 &
  forward_pids+=("$!")
  for _ in $(seq 1 60); do
    FORWARD_PORT="$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$log" | head -n 1)"
    if [ -n "$FORWARD_PORT" ]; then return 0; fi
    sleep 0.5
  done
  die "port-forward to service/$1 did not start: $(cat "$log")"
}

echo "==> smoke: receiver health, metrics and bearer-token check"
forward k8s-runbooks-receiver 8080
receiver="http://127.0.0.1:$FORWARD_PORT"
curl -fsS --max-time 10 "$receiver/healthz" | grep -q '"status":"ok"'
curl -fsS --max-time 10 "$receiver/metrics" | grep -q '^k8s_runbooks_receiver_spool_depth'
alert='{"version":"4","status":"firing","receiver":"k8s-runbooks","groupKey":"e2e","alerts":[{"status":"firing",
"labels":{"alertname":"E2ESmoke","namespace":"shop"},"annotations":{},"startsAt":"2026-01-01T00:00:00Z","fingerprint":"e2e"}]}'
code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H 'Content-Type: application/json' \
  -d "$alert" "$receiver/v1/alerts/alertmanager")"
[ "$code" = 401 ] || die "receiver answered $code to an alert without the bearer token (want 401)"
curl -fsS -o /dev/null --max-time 10 -H 'Content-Type: application/json' -H "Authorization: Bearer $receiver_token" \
  -d "$alert" "$receiver/v1/alerts/alertmanager"

echo "==> smoke: the worker created its Kubernetes work pool on the in-cluster Prefect server"
forward prefect-server 4200
prefect_api="http://127.0.0.1:$FORWARD_PORT/api"
deadline=$((SECONDS + 180))
code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$prefect_api/work_pools/k8s-runbooks")"
[ "$code" = 401 ] || die "the Prefect server answered $code without its auth string (want 401)"
until curl -fsS --max-time 10 -u "$prefect_auth" "$prefect_api/work_pools/k8s-runbooks" 2>/dev/null | grep -q '"type":"kubernetes"'; do
  [ "$SECONDS" -lt "$deadline" ] || die "work pool k8s-runbooks (type kubernetes) not created by the worker"
  sleep 5
done
export PREFECT_API_URL="$prefect_api" PREFECT_API_AUTH_STRING="$prefect_auth"

echo "==> end-to-end tests against kind (K8S_RUNBOOKS_TEST_KUBECONFIG=$KUBECONFIG)"
if [ "$#" -eq 0 ]; then set -- "${E2E_TESTS[@]}"; fi
K8S_RUNBOOKS_TEST_KUBECONFIG="$KUBECONFIG" "$PYTHON" -m pytest -q -ra "$@"
