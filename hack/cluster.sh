#!/usr/bin/env bash
# Local Kubernetes control plane for tcred's tests and demo: etcd + kube-apiserver +
# kube-controller-manager built from their Go modules (wrappers in hack/k8s-bins and hack/etcd-bin),
# plus helm and a matching kubectl. Binaries are cached by version outside the repository.
#
#   hack/cluster.sh build    build (or find cached) binaries, print their directory
#   hack/cluster.sh build-node   build (or find cached) kubelet and kube-scheduler (hack/node.sh)
#   hack/cluster.sh up       start the control plane if it is not running (idempotent)
#   hack/cluster.sh down     stop the processes this script started (by PID)
#   hack/cluster.sh status   show what runs, where
#   hack/cluster.sh restart-apiserver [seconds]   stop the API server (by PID), wait, start it again
#   hack/cluster.sh env      print shell exports (KUBECONFIG, PATH with the cached binaries)
#   hack/cluster.sh bin-dir kubernetes|etcd|helm   where the cached binaries live
#
# State lives in target/cluster/: kubeconfig (admin), kubeconfig-tenant-a, kubeconfig-tenant-b,
# certificates, the token file, pid files and logs.
set -euo pipefail

K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
HELM_VERSION=v3.22.0

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="$ROOT/target/cluster"
CACHE="${TCRED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tcred}"
K8S_BIN="$CACHE/bin/kubernetes-$K8S_VERSION"
ETCD_BIN="$CACHE/bin/etcd-$ETCD_VERSION"
HELM_BIN="$CACHE/bin/helm-$HELM_VERSION"

export GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:--buildvcs=false} -p=2"

# What tcred's tests rely on: owner-reference garbage collection, namespace deletion, default
# ServiceAccounts and kube-root-ca.crt, workloads creating ReplicaSets, aggregated ClusterRoles,
# quota usage (a full quota is how a test makes the API server refuse a Secret write).
KCM_CONTROLLERS=garbage-collector-controller,namespace-controller,serviceaccount-controller,resourcequota-controller
KCM_CONTROLLERS+=,root-ca-certificate-publisher-controller,deployment-controller,replicaset-controller
KCM_CONTROLLERS+=,statefulset-controller,daemonset-controller,clusterrole-aggregation-controller
KCM_CONTROLLERS+=,disruption-controller

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }

# --- build -------------------------------------------------------------------------------------

# Builds $2 from package $3 in wrapper module $1 into $4, atomically (a half-written binary never
# looks cached).
go_build() {
  local module=$1 out=$2 pkg=$3 ldflags=$4
  local tmp="$out.tmp.$$"
  (cd "$ROOT/hack/$module" && go build -trimpath -tags=selinux,notest,grpcnotrace \
    -ldflags="$ldflags" -o "$tmp" "$pkg")
  mv -f "$tmp" "$out"
}

k8s_ldflags() {
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local flags="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    flags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  printf '%s' "$flags"
}

build() {
  command -v go >/dev/null || die "Go is required (go1.26+); see README"
  mkdir -p "$K8S_BIN" "$ETCD_BIN" "$HELM_BIN"
  local b
  for b in kube-apiserver kube-controller-manager kubectl; do
    if [[ ! -x "$K8S_BIN/$b" ]]; then
      log "building $b $K8S_VERSION (cold builds take several minutes)"
      go_build k8s-bins "$K8S_BIN/$b" "k8s.io/kubernetes/cmd/$b" "$(k8s_ldflags)"
    fi
  done
  if [[ ! -x "$ETCD_BIN/etcd" ]]; then
    log "building etcd $ETCD_VERSION"
    go_build etcd-bin "$ETCD_BIN/etcd" go.etcd.io/etcd/server/v3 "-s -w"
  fi
  if [[ ! -x "$HELM_BIN/helm" ]]; then
    log "building helm $HELM_VERSION"
    local hv=${HELM_VERSION#v} minor
    minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
    GOBIN="$HELM_BIN" go install -trimpath -ldflags "-s -w \
      -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
      -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
      -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
      -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    [[ -n "$hv" ]]
  fi
}

# The test node's binaries (hack/node.sh), built and cached the same way.
build_node() {
  command -v go >/dev/null || die "Go is required (go1.26+); see README"
  mkdir -p "$K8S_BIN"
  local b
  for b in kubelet kube-scheduler; do
    if [[ ! -x "$K8S_BIN/$b" ]]; then
      log "building $b $K8S_VERSION"
      go_build k8s-bins "$K8S_BIN/$b" "k8s.io/kubernetes/cmd/$b" "$(k8s_ldflags)"
    fi
  done
}

bin_path() { printf '%s:%s:%s' "$K8S_BIN" "$ETCD_BIN" "$HELM_BIN"; }

# --- certificates, tokens ----------------------------------------------------------------------

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

gen_pki() {
  local pki="$STATE/pki"
  [[ -f "$pki/done" ]] && return 0
  mkdir -p "$pki"
  (
    cd "$pki"
    openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
    openssl req -x509 -new -key ca.key -subj "/CN=tcred-local-ca" -days 3650 -out ca.crt 2>/dev/null
    openssl ecparam -name prime256v1 -genkey -noout -out apiserver.key 2>/dev/null
    openssl req -new -key apiserver.key -subj "/CN=kube-apiserver" -out apiserver.csr 2>/dev/null
    # IP:10.0.0.1 is the `kubernetes` Service's ClusterIP: pods on the test node (hack/node.sh)
    # reach the API server there, through a forwarder on the node's bridge.
    printf 'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' >san.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile san.ext -out apiserver.crt 2>/dev/null
    # ServiceAccount token signing pair (TokenRequest, KCM token controller)
    openssl ecparam -name prime256v1 -genkey -noout -out sa.ec.key 2>/dev/null
    openssl pkcs8 -topk8 -nocrypt -in sa.ec.key -out sa.key
    openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f sa.ec.key apiserver.csr san.ext
    touch done
  )
}

gen_tokens() {
  local f="$STATE/tokens.csv"
  [[ -f "$f" ]] && return 0
  local rnd u
  : >"$f.tmp"
  for u in admin tenant-a tenant-b; do
    rnd=$(openssl rand -hex 16)
    if [[ $u == admin ]]; then
      printf '%s-%s,%s,uid-%s,"system:masters"\n' "$u" "$rnd" "$u" "$u" >>"$f.tmp"
    else
      printf '%s-%s,%s,uid-%s,"tcred:tenants"\n' "$u" "$rnd" "$u" "$u" >>"$f.tmp"
    fi
  done
  chmod 600 "$f.tmp"
  mv "$f.tmp" "$f"
}

token_of() { awk -F, -v u="$1" '$2 == u {print $1}' "$STATE/tokens.csv"; }

write_kubeconfig() {
  local user=$1 out=$2 port
  port=$(cat "$STATE/apiserver.port")
  local ca
  ca=$(base64 -w0 <"$STATE/pki/ca.crt")
  cat >"$out.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tcred-local
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority-data: $ca
users:
- name: $user
  user:
    token: $(token_of "$user")
contexts:
- name: tcred-local-$user
  context: {cluster: tcred-local, user: $user, namespace: default}
current-context: tcred-local-$user
EOF
  chmod 600 "$out.tmp"
  mv "$out.tmp" "$out"
}

# --- processes ---------------------------------------------------------------------------------

alive() { local f="$STATE/$1.pid"; [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null; }

start_bg() {
  local name=$1; shift
  # setsid: the processes outlive the shell that started them (the demo, CI steps)
  setsid "$@" >>"$STATE/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/$name.pid"
}

apiserver_ready() {
  [[ -f "$STATE/apiserver.port" ]] || return 1
  curl -fsS --max-time 3 --cacert "$STATE/pki/ca.crt" \
    -H "Authorization: Bearer $(token_of admin)" \
    "https://127.0.0.1:$(cat "$STATE/apiserver.port")/readyz" >/dev/null 2>&1
}

wait_for() {
  local what=$1 secs=$2; shift 2
  local i
  for ((i = 0; i < secs * 4; i++)); do
    if "$@"; then return 0; fi
    sleep 0.25
  done
  die "$what not ready after ${secs}s (logs in $STATE)"
}

kcm_ready() { curl -fsSk --max-time 2 "https://127.0.0.1:$1/healthz" >/dev/null 2>&1; }

etcd_ready() { curl -fsS --max-time 2 "http://127.0.0.1:$(cat "$STATE/etcd.port")/health" >/dev/null 2>&1; }

# The API server on the ports recorded in $STATE (`up` chose them); used by `up` and
# `restart-apiserver`.
start_apiserver() {
  local pki="$STATE/pki" api_port etcd_port
  api_port=$(cat "$STATE/apiserver.port")
  etcd_port=$(cat "$STATE/etcd.port")
  log "starting kube-apiserver $K8S_VERSION on 127.0.0.1:$api_port"
  start_bg kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --secure-port="$api_port" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --token-auth-file="$STATE/tokens.csv" \
    --authorization-mode=RBAC \
    --service-cluster-ip-range=10.0.0.0/24 \
    --service-account-issuer="https://127.0.0.1:$api_port" \
    --service-account-jwks-uri="https://127.0.0.1:$api_port/openid/v1/jwks" \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --api-audiences="https://127.0.0.1:$api_port" \
    --allow-privileged=true \
    --cert-dir="$STATE/apiserver-certs" \
    --v=1
}

up() {
  if alive etcd && alive kube-apiserver && alive kube-controller-manager && apiserver_ready; then
    log "already up: KUBECONFIG=$STATE/kubeconfig"
    return 0
  fi
  # a partial leftover (one process died) is restarted cleanly
  down >/dev/null 2>&1 || true
  build
  mkdir -p "$STATE"
  gen_pki
  gen_tokens
  local etcd_port peer_port api_port kcm_port
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port); kcm_port=$(free_port)
  echo "$etcd_port" >"$STATE/etcd.port"
  echo "$api_port" >"$STATE/apiserver.port"

  local data="$STATE/etcd-data"
  rm -rf "$data"
  log "starting etcd on 127.0.0.1:$etcd_port"
  start_bg etcd "$ETCD_BIN/etcd" --name=tcred-local --data-dir="$data" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="tcred-local=http://127.0.0.1:$peer_port" \
    --unsafe-no-fsync=true --log-level=warn
  wait_for etcd 30 etcd_ready

  local pki="$STATE/pki"
  start_apiserver
  wait_for kube-apiserver 90 apiserver_ready

  write_kubeconfig admin "$STATE/kubeconfig"
  write_kubeconfig tenant-a "$STATE/kubeconfig-tenant-a"
  write_kubeconfig tenant-b "$STATE/kubeconfig-tenant-b"

  log "starting kube-controller-manager"
  start_bg kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig="$STATE/kubeconfig" \
    --authentication-kubeconfig="$STATE/kubeconfig" --authorization-kubeconfig="$STATE/kubeconfig" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port="$kcm_port" \
    --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
    --use-service-account-credentials=false \
    --service-cluster-ip-range=10.0.0.0/24 --cluster-cidr=10.1.0.0/16 \
    --controllers="$KCM_CONTROLLERS" --concurrent-gc-syncs=5 \
    --v=1
  wait_for kube-controller-manager 30 kcm_ready "$kcm_port"

  local kc=("$K8S_BIN/kubectl" --kubeconfig "$STATE/kubeconfig")
  wait_for "namespace default" 30 "${kc[@]}" get namespace default -o name >/dev/null
  # Let anyone fetch the ServiceAccount issuer's discovery document and JWKS, as managed clusters do,
  # so the Huawei simulator can verify projected tokens the way Huawei's IAM verifies them.
  "${kc[@]}" apply -f - >/dev/null <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: tcred-local:oidc-discovery-unauthenticated}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:service-account-issuer-discovery"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:unauthenticated"}]
EOF
  log "up: KUBECONFIG=$STATE/kubeconfig ($("${kc[@]}" version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'))"
}

stop_one() {
  local name=$1 f="$STATE/$1.pid" pid i
  [[ -f "$f" ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$pid" 2>/dev/null || true
    log "stopped $name ($pid)"
  fi
  rm -f "$f"
}

down() {
  [[ -d "$STATE" ]] || return 0
  # the test node (hack/node.sh) needs the API server to drain its pods: it goes first
  [[ -d "$STATE/node" ]] && { "$ROOT/hack/node.sh" down || true; }
  stop_one kube-controller-manager
  stop_one kube-apiserver
  stop_one etcd
}

# Stops the API server this script started (by its PID; etcd and the controller manager keep
# running, etcd keeps its data), waits $1 seconds (default 0), starts it again on the same port
# with the same flags and waits until it is ready. For the chaos soak (docs/benchmarks.md).
restart_apiserver() {
  local pause=${1:-0}
  [[ $pause =~ ^[0-9]+$ ]] || die "restart-apiserver: the pause is whole seconds, got '$pause'"
  alive etcd && [[ -f "$STATE/apiserver.port" ]] || die "restart-apiserver: the control plane is not up (hack/cluster.sh up)"
  stop_one kube-apiserver
  sleep "$pause"
  start_apiserver
  wait_for kube-apiserver 90 apiserver_ready
  log "kube-apiserver ready again"
}

status() {
  local n rc=0
  for n in etcd kube-apiserver kube-controller-manager; do
    if alive "$n"; then printf '%-24s running (pid %s)\n' "$n" "$(cat "$STATE/$n.pid")"
    else printf '%-24s stopped\n' "$n"; rc=1; fi
  done
  if apiserver_ready; then
    printf '%-24s https://127.0.0.1:%s (ready)\nKUBECONFIG=%s\n' apiserver "$(cat "$STATE/apiserver.port")" "$STATE/kubeconfig"
  else
    rc=1
  fi
  return $rc
}

case "${1:-}" in
  build) build; bin_path; echo ;;
  build-node) build_node ;;
  up) up ;;
  down) down ;;
  status) status ;;
  restart-apiserver) restart_apiserver "${2:-0}" ;;
  bin-dir)
    case "${2:-}" in
      kubernetes) echo "$K8S_BIN" ;; etcd) echo "$ETCD_BIN" ;; helm) echo "$HELM_BIN" ;;
      *) echo "usage: $0 bin-dir kubernetes|etcd|helm" >&2; exit 2 ;;
    esac ;;
  env) printf 'export KUBECONFIG=%q\nexport PATH=%q:$PATH\n' "$STATE/kubeconfig" "$(bin_path)" ;;
  *) echo "usage: $0 build|build-node|up|down|status|restart-apiserver|env|bin-dir" >&2; exit 2 ;;
esac
