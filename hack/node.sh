#!/usr/bin/env bash
# One real Kubernetes node for tcred's tests, next to the control plane of hack/cluster.sh:
# containerd (Debian's, private root/state/socket/config), kubelet and kube-scheduler (built from
# Go modules like the other binaries), bridge CNI on a bridge the rig creates. docs/rig.md explains
# what it changes on the machine and how `down` restores it.
#
#   hack/node.sh up       start the node if it is not running (idempotent); on failure, one line
#                         saying why (also in target/cluster/node/failed) and exit 1
#   hack/node.sh down     stop what `up` started (by PID) and remove everything it left behind
#   hack/node.sh status   show what runs
#   hack/node.sh images   (re)build and import the test images, including the operator's
#
# Network: the bridge tcred0 (10.244.77.1/24) carries the pods; it also holds 10.0.0.1/32, the
# `kubernetes` Service's ClusterIP, where a forwarder relays to the API server on loopback. The
# kubelet's node IP is the bridge address. Nothing listens on or connects to the machine's own
# external interface.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER="$ROOT/target/cluster"
STATE="$CLUSTER/node"
CACHE="${TCRED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tcred}"
K8S_BIN=$("$ROOT/hack/cluster.sh" bin-dir kubernetes)

NODE_NAME=tcred-node
BRIDGE=tcred0
POD_SUBNET=10.244.77.0/24
NODE_IP=10.244.77.1
BRIDGE_MAC=02:74:63:72:65:64
SERVICE_IP=10.0.0.1
CNI_NETWORK=tcred-pods
CNI_BIN=/usr/lib/cni
# One node per machine: the bridge, cgroups and /run/containerd are machine-wide.
OWNER=/run/tcred-node.owner
CGROUP_ROOTS=(kubepods k8s.io)
SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward)

export GOTOOLCHAIN=local CGO_ENABLED=0
CTRD_SOCK="$STATE/containerd/containerd.sock"

log() { printf '[node] %s\n' "$*" >&2; }
# fail REASON: the one line a failed start leaves for the tests and the user
fail() {
  mkdir -p "$STATE"
  printf '%s\n' "$*" >"$STATE/failed"
  printf '[node] not started: %s\n' "$*" >&2
  exit 1
}

kc() { "$K8S_BIN/kubectl" --kubeconfig "$CLUSTER/kubeconfig" "$@"; }
ctr_() { ctr --address "$CTRD_SOCK" -n k8s.io "$@"; }
alive() { local f="$STATE/$1.pid"; [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null; }

start_bg() {
  local name=$1; shift
  setsid "$@" >>"$STATE/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/$name.pid"
}

# wait_until SECONDS WHAT CMD...: polls CMD every 0.5 s
wait_until() {
  local secs=$1 what=$2 i; shift 2
  for ((i = 0; i < secs * 2; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  fail "$what not ready after ${secs}s (logs in $STATE)"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# --- preflight, packages, binaries ---------------------------------------------------------------

preflight() {
  [[ $(id -u) == 0 ]] || fail "needs root (containerd, cgroups, network links)"
  [[ -f "$CLUSTER/kubeconfig" && -f "$CLUSTER/apiserver.port" ]] || fail "no control plane: run hack/cluster.sh up first"
  kc get --raw /readyz >/dev/null 2>&1 || fail "the API server is not ready: run hack/cluster.sh up"
  local c
  for c in cpu cpuacct cpuset memory; do
    [[ -d /sys/fs/cgroup/$c ]] || [[ -f /sys/fs/cgroup/cgroup.controllers ]] ||
      fail "cgroup controller $c is not mounted"
  done
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    fail "this rig's node supports cgroup v1 hosts only (cgroupfs driver); this host runs cgroup v2"
  fi
  local other
  if other=$(other_owner); then
    take_over "$other"
  fi
  openssl x509 -in "$CLUSTER/pki/apiserver.crt" -noout -ext subjectAltName 2>/dev/null | grep -q "IP Address:$SERVICE_IP" ||
    fail "the API server certificate lacks IP:$SERVICE_IP: recreate the control plane (hack/cluster.sh down; rm -rf $CLUSTER/pki; hack/cluster.sh up)"
}

# other_owner: prints the state directory of another worktree whose node holds the machine, if any.
other_owner() {
  [[ -f $OWNER ]] || return 1
  local o
  o=$(cat "$OWNER")
  [[ $o != "$STATE" && -d $o ]] && printf '%s' "$o"
}

# take_over STATE-DIR: another worktree's node holds the machine. CI (CI=true) or a user who says so
# (TCRED_NODE_TAKEOVER=1) stops it with that worktree's own `down`, which knows its control plane;
# anyone else is told whose node it is.
take_over() {
  local other=$1 other_root
  if [[ ${CI:-} != true && ${TCRED_NODE_TAKEOVER:-} != 1 ]]; then
    fail "another worktree's node is up ($other): run its hack/node.sh down first, or set TCRED_NODE_TAKEOVER=1"
  fi
  other_root=$(cd "$other/../../.." 2>/dev/null && pwd) || other_root=
  [[ -n $other_root && -x $other_root/hack/node.sh ]] ||
    fail "another worktree's node is up ($other) and $other/../../../hack/node.sh is missing: stop it by hand (docs/rig.md)"
  log "another worktree's node is up ($other): stopping it with $other_root/hack/node.sh down"
  "$other_root/hack/node.sh" down >&2 || fail "stopping the node of $other_root failed"
  if other_owner >/dev/null; then
    fail "another worktree's node ($other) still holds $OWNER after its down"
  fi
}

ensure_packages() {
  command -v containerd >/dev/null && command -v runc >/dev/null && command -v ctr >/dev/null && return 0
  log "installing containerd and runc (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y -qq containerd runc >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq containerd runc >/dev/null; }; } ||
    fail "apt-get install containerd runc failed"
  [[ -x $CNI_BIN/bridge && -x $CNI_BIN/host-local && -x $CNI_BIN/loopback ]] || {
    apt-get install -y -qq containernetworking-plugins >/dev/null 2>&1 || fail "no CNI plugins in $CNI_BIN"
  }
}

# The helper programs (hack/images), cached by a hash of their sources.
tools_dir() {
  local h
  h=$(cd "$ROOT/hack/images" && find . -name '*.go' -o -name go.mod | sort | xargs sha256sum | sha256sum | cut -c1-12)
  printf '%s' "$CACHE/bin/node-tools-$h"
}

build_tools() {
  "$ROOT/hack/cluster.sh" build-node || fail "building kubelet/kube-scheduler failed"
  TOOLS=$(tools_dir)
  TAG=${TOOLS##*-}
  local p
  mkdir -p "$TOOLS"
  for p in pause consumer forward; do
    [[ -x $TOOLS/$p ]] && continue
    (cd "$ROOT/hack/images" && go build -trimpath -ldflags='-s -w' -o "$TOOLS/$p.tmp.$$" "./$p") ||
      fail "building hack/images/$p failed"
    mv -f "$TOOLS/$p.tmp.$$" "$TOOLS/$p"
  done
}

# --- images --------------------------------------------------------------------------------------

# build_image NAME BINARY ENTRYPOINT-ARGS-JSON: FROM scratch with one static binary, saved as a
# docker archive next to the binary (cached with it).
build_image() {
  local name=$1 bin=$2 ref="local.invalid/tcred-$1:$TAG" tar="$TOOLS/$1.tar"
  [[ -s $tar ]] && return 0
  local b=(buildah --root "$CACHE/buildah/root" --runroot "$STATE/buildah-run" --storage-driver vfs)
  local c
  c=$("${b[@]}" from scratch) || fail "buildah from scratch failed"
  "${b[@]}" copy "$c" "$bin" "/$name" >/dev/null
  "${b[@]}" config --entrypoint "[\"/$name\"]" --cmd '[]' --user 65532:65532 "$c"
  "${b[@]}" commit --quiet --format docker "$c" "$ref" >/dev/null
  "${b[@]}" rm "$c" >/dev/null
  "${b[@]}" push --quiet "$ref" "docker-archive:$tar.tmp:$ref" >/dev/null
  "${b[@]}" rmi "$ref" >/dev/null 2>&1 || true
  mv -f "$tar.tmp" "$tar"
}

import_image() { ctr_ images import --no-unpack=false "$1" >/dev/null; }

node_images() {
  command -v buildah >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah >/dev/null 2>&1 || fail "buildah is missing"
  }
  build_image pause "$TOOLS/pause"
  build_image consumer "$TOOLS/consumer"
  import_image "$TOOLS/pause.tar" || fail "ctr images import (pause) failed"
  import_image "$TOOLS/consumer.tar" || fail "ctr images import (consumer) failed"
  consumer_go_image
}

# Huawei's Go SDK as a consumer (conformance/consumer-go), when the checkout has it: built on the
# host (static) and put in a FROM scratch image like the others.
consumer_go_image() {
  local src="$ROOT/conformance/consumer-go" dir h
  rm -f "$STATE/consumer-go-image"
  [[ -f $src/go.mod && -f $src/main.go ]] || return 0
  h=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-12)
  dir="$CACHE/bin/consumer-go-$h"
  mkdir -p "$dir"
  if [[ ! -x $dir/consumer-go ]]; then
    (cd "$src" && go build -trimpath -ldflags='-s -w' -o "$dir/consumer-go.tmp.$$" .) >>"$STATE/images.log" 2>&1 || {
      log "conformance/consumer-go did not build (see $STATE/images.log); tests use hack/images/consumer"
      return 0
    }
    mv -f "$dir/consumer-go.tmp.$$" "$dir/consumer-go"
  fi
  local saved_tools=$TOOLS saved_tag=$TAG
  TOOLS=$dir TAG=$h
  build_image consumer-go "$dir/consumer-go"
  import_image "$dir/consumer-go.tar" || fail "ctr images import (consumer-go) failed"
  TOOLS=$saved_tools TAG=$saved_tag
  echo "local.invalid/tcred-consumer-go:$h" >"$STATE/consumer-go-image"
}

# The operator's own image (hack/image.sh, the Dockerfile). A failure here leaves the node up and
# names the reason for the operator-as-a-pod test.
operator_image() {
  local version ref tar="$STATE/tcred-image.tar"
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)
  ref="localhost/tcred:$version"
  rm -f "$STATE/operator-image" "$STATE/operator-image.failed"
  if ! "$ROOT/hack/image.sh" build >>"$STATE/images.log" 2>&1; then
    echo "hack/image.sh build failed (see $STATE/images.log)" >"$STATE/operator-image.failed"; return 0
  fi
  if ! buildah --storage-driver "${BUILDAH_STORAGE_DRIVER:-vfs}" push --quiet "$ref" "docker-archive:$tar:$ref" \
    >>"$STATE/images.log" 2>&1 || ! import_image "$tar"; then
    echo "exporting/importing $ref failed (see $STATE/images.log)" >"$STATE/operator-image.failed"; return 0
  fi
  rm -f "$tar"
  echo "$ref" >"$STATE/operator-image"
  log "imported $ref"
}

# --- network -------------------------------------------------------------------------------------

network() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge || fail "cannot create bridge $BRIDGE"
  fi
  # A fixed address: a bridge without one takes the lowest MAC among its ports, so it changes as
  # pods come and go, and a pod's cached ARP entry for the node IP then points nowhere until it
  # expires (up to a minute of lost packets to the agent). Locally administered, "tcred" in hex.
  ip link set "$BRIDGE" address "$BRIDGE_MAC"
  ip addr replace "$NODE_IP/24" dev "$BRIDGE"
  ip addr replace "$SERVICE_IP/32" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  mkdir -p "$STATE/cni/net.d" "$STATE/cni/ipam"
  # isGateway false: the plugin leaves net.ipv4.ip_forward alone and the bridge address is the
  # rig's. Pods get the subnet route and one route to the Service range via the bridge address.
  cat >"$STATE/cni/net.d/10-$CNI_NETWORK.conflist" <<JSON
{"cniVersion": "0.4.0", "name": "$CNI_NETWORK", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": false, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$STATE/cni/ipam",
            "ranges": [[{"subnet": "$POD_SUBNET", "rangeStart": "10.244.77.10", "gateway": "$NODE_IP"}]],
            "routes": [{"dst": "10.0.0.0/24", "gw": "$NODE_IP"}]}}]}
JSON
}

# --- identities ----------------------------------------------------------------------------------

# client_cert NAME CN O: a client certificate signed by the control plane's CA, and a kubeconfig
client_cert() {
  local name=$1 cn=$2 org=$3 pki="$STATE/pki" port
  port=$(cat "$CLUSTER/apiserver.port")
  mkdir -p "$pki"
  if [[ ! -s $pki/$name.crt ]] || ! openssl verify -CAfile "$CLUSTER/pki/ca.crt" "$pki/$name.crt" >/dev/null 2>&1; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$pki/$name.key" 2>/dev/null
    openssl req -new -key "$pki/$name.key" -subj "/O=$org/CN=$cn" -out "$pki/$name.csr" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >"$pki/$name.ext"
    openssl x509 -req -in "$pki/$name.csr" -CA "$CLUSTER/pki/ca.crt" -CAkey "$CLUSTER/pki/ca.key" \
      -CAcreateserial -days 30 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
    rm -f "$pki/$name.csr" "$pki/$name.ext"
    chmod 600 "$pki/$name.key"
  fi
  cat >"$STATE/kubeconfig-$name" <<EOF2
apiVersion: v1
kind: Config
clusters:
- name: tcred-local
  cluster: {server: "https://127.0.0.1:$port", certificate-authority: "$CLUSTER/pki/ca.crt"}
users:
- name: $cn
  user: {client-certificate: "$pki/$name.crt", client-key: "$pki/$name.key"}
contexts:
- name: $name
  context: {cluster: tcred-local, user: "$cn"}
current-context: $name
EOF2
  chmod 600 "$STATE/kubeconfig-$name"
}

identities() {
  client_cert kubelet "system:node:$NODE_NAME" system:nodes
  client_cert scheduler system:kube-scheduler system:kube-scheduler
  # No Node authorizer on this control plane (RBAC only): bind the node's user to system:node.
  kc apply -f - >/dev/null <<EOF2 || fail "cannot bind ClusterRole system:node"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "tcred-local:node:$NODE_NAME"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:node"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:node:$NODE_NAME"}]
EOF2
}

# --- processes -----------------------------------------------------------------------------------

containerd_config() {
  mkdir -p "$STATE/containerd"
  cat >"$STATE/containerd/config.toml" <<EOF2
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$CTRD_SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "local.invalid/tcred-pause:$TAG"
  # This VM's capability bounding set lacks CAP_SYS_RESOURCE: no negative oom_score_adj.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$STATE/cni/net.d"
    max_conf_num = 1
EOF2
}

# Machine-wide places containerd and the kubelet create even with private roots: remember which
# did not exist, so that `down` removes exactly those.
record_created() {
  local d
  for d in /run/containerd /var/lib/cni /var/log/containers /run/netns; do
    [[ -e $d ]] || grep -qxF "$d" "$STATE/created" 2>/dev/null || echo "$d" >>"$STATE/created"
  done
}

start_containerd() {
  containerd_config
  record_created
  start_bg containerd containerd --config "$STATE/containerd/config.toml"
  wait_until 30 containerd ctr --address "$CTRD_SOCK" version
}

save_sysctls() {
  [[ -f $STATE/sysctl.saved ]] && return 0 # an earlier run's record is the machine's original
  local k
  for k in "${SYSCTLS[@]}"; do printf '%s=%s\n' "$k" "$(sysctl -n "$k")"; done >"$STATE/sysctl.saved.tmp"
  mv "$STATE/sysctl.saved.tmp" "$STATE/sysctl.saved"
}

restore_sysctls() {
  [[ -f $STATE/sysctl.saved ]] || return 0
  local line
  while IFS= read -r line; do
    [[ $(sysctl -n "${line%%=*}") == "${line#*=}" ]] || sysctl -q -w "$line" >/dev/null || true
  done <"$STATE/sysctl.saved"
}

kubelet_config() {
  mkdir -p "$STATE/kubelet/pod-logs"
  cat >"$STATE/kubelet.yaml" <<EOF2
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false            # this host is cgroup v1 (hybrid), no systemd
cgroupDriver: cgroupfs         # containerd 1.6 has no RuntimeConfig: the kubelet uses this
containerRuntimeEndpoint: unix://$CTRD_SOCK
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$CLUSTER/pki/ca.crt"}
authorization: {mode: Webhook}
oomScoreAdj: 0                 # -999 needs CAP_SYS_RESOURCE, which this VM lacks
podLogsDir: $STATE/kubelet/pod-logs
imageGCHighThresholdPercent: 100   # images are imported, never pulled: never collect them
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "1%", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
resolvConf: /etc/resolv.conf
syncFrequency: 10s             # Secret volumes follow a rotation within seconds
serializeImagePulls: false
failSwapOn: false
EOF2
}

start_kubelet() {
  local hport
  hport=$(free_port)
  echo "$hport" >"$STATE/kubelet.healthz-port"
  kubelet_config "$hport"
  save_sysctls
  start_bg kubelet "$K8S_BIN/kubelet" --config="$STATE/kubelet.yaml" \
    --kubeconfig="$STATE/kubeconfig-kubelet" --root-dir="$STATE/kubelet" --cert-dir="$STATE/kubelet/pki" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1
  # The kubelet sets vm.overcommit_memory, kernel.panic and kernel.panic_on_oops once, at start:
  # put them back as soon as it has (and again once the node is Ready).
  local i
  for ((i = 0; i < 120; i++)); do
    alive kubelet || fail "kubelet exited: $(grep -m1 -E '^E|run.go|failed' "$STATE/kubelet.log" | cut -c1-300)"
    [[ $(sysctl -n kernel.panic_on_oops) != "$(sed -n 's/^kernel.panic_on_oops=//p' "$STATE/sysctl.saved")" ]] && break
    curl -fsS --max-time 1 "http://127.0.0.1:$hport/healthz" >/dev/null 2>&1 && break
    sleep 0.5
  done
  restore_sysctls
}

start_scheduler() {
  local port
  port=$(free_port)
  start_bg kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig="$STATE/kubeconfig-scheduler" \
    --authentication-kubeconfig="$STATE/kubeconfig-scheduler" --authorization-kubeconfig="$STATE/kubeconfig-scheduler" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port="$port" --v=1
  wait_until 60 kube-scheduler curl -fsSk --max-time 2 "https://127.0.0.1:$port/healthz"
}

# Pods reach the API server at the `kubernetes` Service's ClusterIP (what the kubelet puts in
# KUBERNETES_SERVICE_HOST/PORT): 10.0.0.1:443 on the bridge, relayed to loopback.
start_forwarder() {
  start_bg apiserver-forward "$TOOLS/forward" "$SERVICE_IP:443" "127.0.0.1:$(cat "$CLUSTER/apiserver.port")"
  wait_until 10 "the API server forwarder" curl -fsS --max-time 2 --cacert "$CLUSTER/pki/ca.crt" \
    -o /dev/null -w '' "https://$SERVICE_IP:443/livez"
}

node_ready() {
  [[ $(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

# --- up ------------------------------------------------------------------------------------------

write_env() {
  cat >"$STATE/node.env.tmp" <<EOF2
NODE_NAME=$NODE_NAME
NODE_IP=$NODE_IP
SERVICE_IP=$SERVICE_IP
PAUSE_IMAGE=local.invalid/tcred-pause:$TAG
CONSUMER_IMAGE=local.invalid/tcred-consumer:$TAG
FORWARD_BIN=$TOOLS/forward
POD_LOGS=$STATE/kubelet/pod-logs
CONTAINERD_SOCK=$CTRD_SOCK
EOF2
  mv "$STATE/node.env.tmp" "$STATE/node.env"
}

is_up() {
  alive containerd && alive kubelet && alive kube-scheduler && alive apiserver-forward && node_ready
}

up() {
  if [[ -f $STATE/node.env ]] && is_up; then
    log "already up: node $NODE_NAME ($NODE_IP)"
    return 0
  fi
  local start=$SECONDS
  down >/dev/null 2>&1 || true
  mkdir -p "$STATE"
  rm -f "$STATE/failed"
  preflight
  echo "$STATE" >"$OWNER"
  ensure_packages
  build_tools
  log "binaries ready after $((SECONDS - start))s"
  network
  identities
  start_containerd
  node_images
  start_forwarder
  start_scheduler
  start_kubelet
  wait_until 120 "node $NODE_NAME Ready" node_ready
  restore_sysctls
  # No node-lifecycle-controller runs (see docs/rig.md): the not-ready taint admission put on the
  # new Node is removed here, once, now that the node is Ready.
  kc taint node "$NODE_NAME" node.kubernetes.io/not-ready:NoSchedule- >/dev/null 2>&1 || true
  write_env
  log "node $NODE_NAME Ready ($NODE_IP) after $((SECONDS - start))s"
  if [[ ${TCRED_NODE_SKIP_OPERATOR_IMAGE:-} != 1 ]]; then
    operator_image
    log "operator image step done after $((SECONDS - start))s"
  fi
}

# --- down ----------------------------------------------------------------------------------------

stop_pid() {
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

# Every container and sandbox goes before containerd stops: first through the kubelet (it tears
# the pod network down through CNI), then whatever is left through ctr.
remove_pods() {
  if alive kubelet && kc get --raw /readyz >/dev/null 2>&1; then
    kc delete pods -A --field-selector "spec.nodeName=$NODE_NAME" --grace-period=0 --force \
      --wait=false >/dev/null 2>&1 || true
    local i
    for ((i = 0; i < 60; i++)); do
      [[ -z $(ctr_ tasks ls -q 2>/dev/null) ]] && break
      sleep 0.5
    done
  fi
  stop_pid kubelet
  stop_pid kube-scheduler
  if alive containerd; then
    local t
    for t in $(ctr_ tasks ls -q 2>/dev/null); do
      ctr_ tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
    done
    sleep 1
    for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$t" >/dev/null 2>&1 || true; done
    for t in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$t" >/dev/null 2>&1 || true; done
  fi
}

# Shims containerd started for this node outlive it; they name its socket on their command line.
stop_shims() {
  local p
  for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $CTRD_SOCK" 2>/dev/null || true); do
    kill -KILL "$p" 2>/dev/null || true
  done
}

unmount_all() {
  local m
  # deepest first; the kubelet's root is an rshared bind mount of itself
  for m in $(findmnt -rn -o TARGET | grep -E "^($STATE|/run/containerd)(/|$)" | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

remove_cgroups() {
  local h r
  for h in /sys/fs/cgroup/*/; do
    for r in "${CGROUP_ROOTS[@]}"; do
      [[ -d $h$r ]] && find "$h$r" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
  done
}

remove_network() {
  local n
  for n in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do ip netns delete "$n" 2>/dev/null || true; done
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE" 2>/dev/null || true
  rm -f /var/lib/cni/results/"$CNI_NETWORK"-* 2>/dev/null || true
  rm -rf "$STATE/cni/ipam"
}

remove_created() {
  [[ -f $STATE/created ]] || return 0
  local d
  while IFS= read -r d; do
    [[ -n $d && -e $d ]] || continue
    if [[ $d == /run/netns || $d == /var/log/containers ]]; then
      rmdir "$d" 2>/dev/null || true # only when empty: something else may use it now
    else
      rm -rf "$d"
    fi
  done <"$STATE/created"
  rm -f "$STATE/created"
}

down() {
  [[ -d $STATE ]] || return 0
  remove_pods
  stop_pid apiserver-forward
  stop_pid containerd
  stop_shims
  unmount_all
  remove_cgroups
  remove_network
  find /var/log/containers -maxdepth 1 -type l -lname "$STATE/*" -delete 2>/dev/null || true
  remove_created
  restore_sysctls
  rm -f "$STATE/sysctl.saved" "$STATE/node.env"
  rm -rf "$STATE/containerd/state" "$STATE/buildah-run"
  if kc get --raw /readyz >/dev/null 2>&1; then
    kc delete node "$NODE_NAME" --wait=false >/dev/null 2>&1 || true
  fi
  [[ -f $OWNER && $(cat "$OWNER") == "$STATE" ]] && rm -f "$OWNER"
  log "down"
}

status() {
  local n rc=0
  for n in containerd kubelet kube-scheduler apiserver-forward; do
    if alive "$n"; then printf '%-20s running (pid %s)\n' "$n" "$(cat "$STATE/$n.pid")"
    else printf '%-20s stopped\n' "$n"; rc=1; fi
  done
  if node_ready; then printf '%-20s %s Ready (%s)\n' node "$NODE_NAME" "$NODE_IP"; else rc=1; fi
  [[ -f $STATE/failed ]] && printf 'last failure: %s\n' "$(cat "$STATE/failed")"
  return $rc
}

# All of the script is parsed before anything runs (an edit of this file during a long `up` must not
# change what the running one does).
main() {
  case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    images)
      [[ -f $STATE/node.env ]] && alive containerd || fail "the node is not up"
      TOOLS=$(tools_dir); TAG=${TOOLS##*-}
      node_images; operator_image ;;
    *) echo "usage: $0 up|down|status|images" >&2; exit 2 ;;
  esac
}

main "$@"; exit $?
