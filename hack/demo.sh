#!/usr/bin/env bash
# The local demo: control plane + Huawei simulator + operator + an example TemporaryCredential,
# ending with the Secret shown (its keys, not its values).
#
#   hack/demo.sh up     start everything (idempotent) and show the result
#   hack/demo.sh down   stop the simulator and the operator (the control plane stays up)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="$ROOT/target/demo"
NS=demo
# The simulated Huawei Cloud: the test world the simulator's tests, the cluster tests and the
# conformance suite use too. The demo mints for agency `ops` with IAM user ci-bot's access key.
WORLD=sim/fixtures/world.yaml
cd "$ROOT"

# The first value of `key: "value"` in the world file.
world() { sed -n "s/^ *-* *$1: *\"\(.*\)\"\$/\1/p" "$WORLD" | head -n 1; }

log() { printf '\n==> %s\n' "$*"; }

alive() { [[ -f "$STATE/$1.pid" ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

stop() {
  local name=$1
  if alive "$name"; then
    kill -TERM "$(cat "$STATE/$name.pid")" 2>/dev/null || true
    for _ in $(seq 1 50); do alive "$name" || break; sleep 0.2; done
    alive "$name" && kill -KILL "$(cat "$STATE/$name.pid")" 2>/dev/null || true
    echo "stopped $name"
  fi
  rm -f "$STATE/$name.pid"
}

down() {
  stop operator
  stop simulator
}

up() {
  log "local control plane"
  hack/cluster.sh up
  eval "$(hack/cluster.sh env)"
  mkdir -p "$STATE"

  log "building tcred and the Huawei simulator"
  cargo build --quiet --package tcred --package tcred-huawei-sim

  if ! alive simulator; then
    log "starting the Huawei Cloud simulator"
    : >"$STATE/simulator.log"
    setsid target/debug/tcred-huawei-sim --config "$WORLD" --listen 127.0.0.1:0 \
      >"$STATE/simulator.out" 2>>"$STATE/simulator.log" </dev/null &
    echo $! >"$STATE/simulator.pid"
    for _ in $(seq 1 50); do [[ -s "$STATE/simulator.out" ]] && break; sleep 0.1; done
  fi
  SIM_URL=$(sed -n 's/^listening on //p' "$STATE/simulator.out" | head -n 1)
  [[ -n "$SIM_URL" ]] || { echo "the simulator did not start; see $STATE/simulator.log" >&2; exit 1; }
  echo "simulator: $SIM_URL"

  log "installing the CRDs"
  kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
  kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null

  log "an access key Secret, a CredentialSource and a TemporaryCredential in namespace $NS"
  kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl -n "$NS" create secret generic corp-ak \
    --from-literal=accessKeyId="$(world accessKeyId)" \
    --from-literal=secretAccessKey="$(world secretAccessKey)" \
    --dry-run=client -o yaml \
    | kubectl label --local -f - -o yaml tcred.dev/source-kind=CredentialSource tcred.dev/source-name=corp \
    | kubectl apply -f - >/dev/null
  kubectl apply -f - <<EOF
apiVersion: tcred.dev/v1alpha1
kind: CredentialSource
metadata: {name: corp, namespace: $NS}
spec:
  accessKey:
    region: ap-southeast-1
    secretRef: {name: corp-ak}
  endpoints:
    sts: $SIM_URL
---
apiVersion: tcred.dev/v1alpha1
kind: TemporaryCredential
metadata: {name: billing, namespace: $NS}
spec:
  sourceRef: {name: corp}
  agencyUrn: "iam::$(world id):agency:ops"
  duration: 1h
  secret: {name: billing-creds}
EOF

  if ! alive operator; then
    log "starting the operator"
    METRICS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    echo "$METRICS_PORT" >"$STATE/metrics.port"
    # Scoped to the demo namespace, so a running demo never touches the test suite's objects. The
    # demo's CredentialSource is namespaced and points at the loopback simulator: allow that host.
    KUBECONFIG="$ROOT/target/cluster/kubeconfig" setsid target/debug/tcred controller \
      --namespace "$NS" --leader-elect=true --leader-election-namespace "$NS" \
      --allowed-endpoint-hosts=127.0.0.1,localhost \
      --metrics-bind-address "127.0.0.1:$METRICS_PORT" \
      >"$STATE/operator.log" 2>&1 </dev/null &
    echo $! >"$STATE/operator.pid"
  fi

  log "waiting for the credential"
  kubectl -n "$NS" wait --for=condition=Ready temporarycredential/billing --timeout=90s
  echo
  kubectl -n "$NS" get temporarycredential
  echo
  kubectl get tcred-all -A
  log "Secret $NS/billing-creds (keys only; the values are the credential)"
  kubectl -n "$NS" get secret billing-creds \
    -o go-template='{{range $k, $v := .data}}{{printf "  %-32s %d bytes\n" $k (len (base64decode $v))}}{{end}}'
  kubectl -n "$NS" get secret billing-creds -o jsonpath='{.metadata.annotations}{"\n"}' |
    python3 -c 'import json,sys; a=json.load(sys.stdin); [print(f"  {k}: {v}") for k,v in sorted(a.items()) if k.startswith("tcred.dev/")]'

  cat <<EOF

The demo is up. Try:
  eval "\$(hack/cluster.sh env)"                 # kubectl and KUBECONFIG for the local cluster
  kubectl -n $NS describe tcred billing           # status, conditions and Events
  kubectl -n $NS annotate tcred billing tcred.dev/rotate="\$(date +%s)" --overwrite   # rotate now
  curl -s http://127.0.0.1:$(cat "$STATE/metrics.port")/metrics | grep ^tcred_   # metrics
  tail -f $STATE/operator.log                     # operator log
  make demo-down                                  # stop the operator and the simulator
EOF
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
