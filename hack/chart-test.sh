#!/usr/bin/env bash
# Tests the Helm chart charts/tcred against the running local control plane (hack/cluster.sh up):
#
#   1. helm lint --strict: defaults, every optional toggle on, every value set, namespace-scoped
#      mode; the schema refuses unknown and invalid values
#   2. offline: the chart's CRDs equal crds/, no RBAC rule uses a wildcard
#   3. the PrometheusRule's rules and the dashboard's queries parse (Prometheus' own parsers,
#      built from hack/promql-check); every rendered object (all toggles on, both RBAC shapes)
#      validated server-side (kubectl apply --dry-run=server), ServiceMonitor and PrometheusRule
#      against the real prometheus-operator CRDs (from the Go module proxy, pinned below)
#   4. helm install into a fresh namespace that enforces the "restricted" Pod Security Standard:
#      Deployment, ReplicaSet and pods appear; effective RBAC (no ServiceAccount tokens, no
#      TokenReviews, no workload patches by default); CRDs annotated keep
#   5. helm upgrade with changed values: the Deployment changes, a new ReplicaSet appears; with
#      rbac.webIdentity / rbac.rolloutRestarts on, exactly their rights appear
#   6. helm uninstall: the Deployment and RBAC are gone, the CRDs remain
#   7. a namespace-scoped install (watchNamespace): the RBAC shape and effective permissions
#   8. pod identity (podIdentity.enabled): lint, the defaults render unchanged with it off, the
#      cert-manager variant, and an install whose DaemonSet, Services, webhook configuration and
#      RBAC are checked on the API server
#
# Each run uses its own release names and namespaces and removes them on exit. The tcred CRDs are
# shared with other tests running at the same time: this script updates them (with identical
# content: it stops before touching the cluster when the chart's copy drifted) and never deletes
# them. The prometheus-operator CRDs it installs stay, for the same reason.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CHART=charts/tcred
PROM_OPERATOR_VERSION=v0.85.0
PROM_OPERATOR_CRDS=example/prometheus-operator-crd

export KUBECONFIG="$ROOT/target/cluster/kubeconfig"
HELM="$(hack/cluster.sh bin-dir helm)/helm"
KUBECTL="$(hack/cluster.sh bin-dir kubernetes)/kubectl"
[[ -x $HELM && -x $KUBECTL ]] || { echo "helm or kubectl missing: run hack/cluster.sh build" >&2; exit 1; }
python3 -c 'import yaml' 2>/dev/null || { echo "python3 with PyYAML is required" >&2; exit 1; }
hack/cluster.sh status >/dev/null || { echo "the local control plane is down: run hack/cluster.sh up" >&2; exit 1; }

RUN=$(printf '%05d%s' "$$" "$(openssl rand -hex 2)" | tail -c 8)
REL=tcred-ct-$RUN            # cluster-wide release
NS=tcred-ct-$RUN
REL_SCOPED=tcred-cts-$RUN    # namespace-scoped release
NS_SCOPED=tcred-cts-$RUN
NS_WATCHED=tcred-ctw-$RUN    # the namespace the scoped release watches
NS_SOURCES=tcred-ctx-$RUN    # where a ClusterCredentialSource's Secret lives
REL_PI=tcred-ctp-$RUN        # pod identity release (its agent runs on the host network)
NS_PI=tcred-ctp-$RUN
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tcred-chart-test.XXXXXX")
START=$SECONDS
PASSED=0 FAILED=0

ALL_TOGGLES=metrics.serviceMonitor.enabled=true,prometheusRule.enabled=true,grafana.dashboard.enabled=true
ALL_TOGGLES+=,networkPolicy.enabled=true,podDisruptionBudget.enabled=true,prometheusRule.runbookBaseUrl=https://example.com/ops
ALL_TOGGLES+=,rbac.webIdentity.enabled=true,rbac.rolloutRestarts.enabled=true
SCOPED="watchNamespace=$NS_WATCHED,rbac.sourceSecrets[0].namespace=$NS_SOURCES"
SCOPED+=",rbac.sourceSecrets[0].names[0]=corp-ic-session"
SHARDED="shards[0].name=a,shards[1].name=b,shards[1].replicaCount=3,shards[1].controller.mintRate=5"

k() { "$KUBECTL" "$@"; }
step() { printf '\n==> %s\n' "$*"; }
pass() { PASSED=$((PASSED + 1)); printf '  ok    %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf '  FAIL  %s\n' "$*"; }
# check "description" command...: passes when the command succeeds
check() { local what=$1; shift; if "$@" >"$WORK/check.out" 2>&1; then pass "$what"; else fail "$what"; sed 's/^/        /' "$WORK/check.out" | head -20; fi; }
# eventually SECONDS "description" command...: retries until the command succeeds
eventually() {
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >"$WORK/check.out" 2>&1; do
    if ((SECONDS >= deadline)); then fail "$what (after ${secs}s)"; sed 's/^/        /' "$WORK/check.out" | head -20; return 0; fi
    sleep 1
  done
  pass "$what"
}
# jsonpath KIND/NAME NAMESPACE EXPR
jp() { k get "$1" ${2:+-n "$2"} -o "jsonpath=$3"; }
equals() { [[ $1 == "$2" ]] || { echo "expected '$2', got '$1'"; return 1; }; }
can_i() { k auth can-i "$@" --as="system:serviceaccount:$SA_NS:$SA"; }
cannot_i() { ! can_i "$@"; }
# For resources the API server does not serve (Argo Rollouts is not installed here), `kubectl auth
# can-i` answers "no" whatever the rules say: ask with a SubjectAccessReview instead.
# Usage: can_sar VERB GROUP RESOURCE NAMESPACE
can_sar() {
  [[ $(k create -o jsonpath='{.status.allowed}' -f - <<EOF_SAR
apiVersion: authorization.k8s.io/v1
kind: SubjectAccessReview
spec:
  user: system:serviceaccount:$SA_NS:$SA
  groups: [system:serviceaccounts, "system:serviceaccounts:$SA_NS", system:authenticated]
  resourceAttributes: {verb: $1, group: $2, resource: $3, namespace: $4}
EOF_SAR
  ) == true ]]
}
cannot_sar() { ! can_sar "$@"; }

cleanup() {
  local rc=$?
  set +e
  "$HELM" uninstall "$REL" -n "$NS" >/dev/null 2>&1
  "$HELM" uninstall "$REL_SCOPED" -n "$NS_SCOPED" >/dev/null 2>&1
  "$HELM" uninstall "$REL_PI" -n "$NS_PI" >/dev/null 2>&1
  # cluster-scoped leftovers of a run that stopped half-way (never the tcred CRDs)
  k delete clusterrole,clusterrolebinding,validatingadmissionpolicy,validatingadmissionpolicybinding \
    -l "app.kubernetes.io/instance in ($REL,$REL_SCOPED,$REL_PI)" --ignore-not-found >/dev/null 2>&1
  k delete mutatingwebhookconfiguration -l "app.kubernetes.io/instance=$REL_PI" --ignore-not-found >/dev/null 2>&1
  k delete clustercredentialsource "$REL-nobody" --ignore-not-found >/dev/null 2>&1
  k delete namespace "$NS" "$NS_SCOPED" "$NS_WATCHED" "$NS_SOURCES" "$NS_PI" --ignore-not-found --wait=false >/dev/null 2>&1
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

# Every other value set to something non-default, so every template branch renders.
cat >"$WORK/full-values.yaml" <<'EOF'
image: {digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", pullPolicy: Always}
imagePullSecrets: [regcred]
serviceAccount: {annotations: {example.com/role: tcred}}
priorityClassName: system-cluster-critical
podAnnotations: {example.com/note: chart-test}
podLabels: {team: platform}
extraArgs: ["--concurrency=8"]
extraEnv: [{name: HTTPS_PROXY, value: "http://proxy.example.com:3128"}]
tolerations: [{key: dedicated, operator: Equal, value: platform, effect: NoSchedule}]
topologySpreadConstraints: [{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}]
controller:
  concurrency: 8
  mintRate: 2.5
  mintBurst: 5
  sessionWarning: 48h
  allowedEndpointHosts: [sts.example.com, "*.corp.example", "idp.example.com:8443", "[::1]"]
  excludeNamespaces: [team-scoped, team-other]
leaderElection: {leaseName: tcred-chart-test, leaseDurationSeconds: 20, leaseGraceSeconds: 6}
metrics:
  service: {annotations: {example.com/note: chart-test}}
  serviceMonitor: {labels: {release: prometheus}, interval: 15s, scrapeTimeout: 5s}
prometheusRule: {labels: {release: prometheus}, alertLabels: {team: platform}, sessionExpiryWarningHours: 48}
grafana: {dashboard: {annotations: {grafana_folder: Platform}}}
networkPolicy:
  metricsFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
  dns: {to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}}]}
  apiServer: {cidrs: [10.0.0.1/32], ports: [6443]}
  extraEgress: [{to: [{ipBlock: {cidr: 10.2.0.0/16}}], ports: [{port: 3128, protocol: TCP}]}]
EOF

# --- 1. lint ---------------------------------------------------------------------------------------

step "helm lint --strict"
check "defaults" "$HELM" lint --strict "$CHART"
check "every optional toggle on" "$HELM" lint --strict "$CHART" --set "$ALL_TOGGLES"
check "every value set (all toggles and non-default values)" "$HELM" lint --strict "$CHART" -f "$WORK/full-values.yaml" --set "$ALL_TOGGLES"
check "namespace-scoped (watchNamespace, rbac.sourceSecrets)" "$HELM" lint --strict "$CHART" --set "$SCOPED"
check "replicaCount 1 without leader election" "$HELM" lint --strict "$CHART" --set replicaCount=1,leaderElection.enabled=false
check "replicas without leader election are refused" \
  bash -c "! '$HELM' template x '$CHART' --set leaderElection.enabled=false"
check "unknown values are refused (schema)" bash -c "! '$HELM' template x '$CHART' --set noSuchValue=1"
check "a bad logFormat is refused (schema)" bash -c "! '$HELM' template x '$CHART' --set logFormat=xml"
check "a bad excludeNamespaces entry is refused (schema)" \
  bash -c "! '$HELM' template x '$CHART' --set 'controller.excludeNamespaces={Not_A_Namespace}'"
check "rbac.webIdentity needs a boolean (schema)" bash -c "! '$HELM' template x '$CHART' --set rbac.webIdentity.enabled=maybe"
check "sharded: shards a and b besides the default shard, every toggle on" \
  "$HELM" lint --strict "$CHART" --set "$SHARDED,$ALL_TOGGLES"
check "a shard named default is refused" bash -c "! '$HELM' template x '$CHART' --set 'shards[0].name=default'"
check "a shard name that is no DNS label is refused (schema)" bash -c "! '$HELM' template x '$CHART' --set 'shards[0].name=A_b'"
check "a shard with its own selector needs defaultShard.selector" \
  bash -c "! '$HELM' template x '$CHART' --set 'shards[0].name=a,shards[0].selector=team=x'"
check "a sharded install with replicas needs leader election" \
  bash -c "! '$HELM' template x '$CHART' --set 'replicaCount=1,leaderElection.enabled=false,shards[0].name=a,shards[0].replicaCount=2'"

# --- 2. offline checks ---------------------------------------------------------------------------

step "rendered chart (offline)"
"$HELM" template "$REL" "$CHART" -n "$NS" -f "$WORK/full-values.yaml" --set "$ALL_TOGGLES" >"$WORK/all.yaml"
"$HELM" template "$REL_SCOPED" "$CHART" -n "$NS_SCOPED" --set "$ALL_TOGGLES,$SCOPED,crds.enabled=false" >"$WORK/scoped.yaml"
check "the chart's CRDs equal crds/ (else run 'make crds')" python3 - "$WORK/all.yaml" <<'EOF'
import glob, sys, yaml
chart = {d["metadata"]["name"]: d for d in yaml.safe_load_all(open(sys.argv[1]))
         if d and d["kind"] == "CustomResourceDefinition"}
repo = {d["metadata"]["name"]: d for d in (yaml.safe_load(open(f)) for f in sorted(glob.glob("crds/*.yaml")))}
assert chart.keys() == repo.keys(), f"chart has {sorted(chart)}, crds/ has {sorted(repo)}"
for name, d in repo.items():
    c = chart[name]
    assert c["spec"] == d["spec"], f"{name}: spec differs"
    assert c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep", f"{name}: no keep annotation"
EOF
check "no RBAC rule uses a wildcard, no escalation verbs" python3 - "$WORK/all.yaml" "$WORK/scoped.yaml" <<'EOF'
import sys, yaml
for f in sys.argv[1:]:
    for d in yaml.safe_load_all(open(f)):
        if d and d["kind"] in ("ClusterRole", "Role"):
            for r in d.get("rules", []):
                for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert "*" not in r.get(key, []), f"{d['kind']} {d['metadata']['name']}: {key} has '*'"
                assert not {"escalate", "bind", "impersonate"} & set(r["verbs"]), f"{d['metadata']['name']}: {r}"
EOF
check "scoped mode: no Secret access outside the watched namespace except named Secrets" \
  python3 - "$WORK/scoped.yaml" "$NS_WATCHED" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for d in docs:
    for r in d.get("rules", []) if d["kind"] in ("ClusterRole", "Role") else []:
        if "secrets" in r.get("resources", []):
            ns = d["metadata"].get("namespace")
            assert d["kind"] == "Role", f"ClusterRole {d['metadata']['name']} grants secrets"
            assert ns == sys.argv[2] or r.get("resourceNames"), f"Role {ns}/{d['metadata']['name']}: {r}"
EOF

check "the allowlist and excluded namespaces reach the controller's flags" python3 - "$WORK/all.yaml" <<'EOF'
import sys, yaml
d = next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "Deployment")
args = d["spec"]["template"]["spec"]["containers"][0]["args"]
want = ["--allowed-endpoint-hosts=sts.example.com,*.corp.example,idp.example.com:8443,[::1]",
        "--exclude-namespaces=team-scoped,team-other"]
assert all(w in args for w in want), args
EOF
check "by default: no ServiceAccount tokens, TokenReviews or workload patches in any RBAC" bash -c \
  "'$HELM' template '$REL' '$CHART' -n '$NS' > '$WORK/defaults.yaml' && '$HELM' template '$REL_SCOPED' '$CHART' -n '$NS_SCOPED' --set '$SCOPED' >> '$WORK/defaults.yaml' \
   && ! grep -nE 'serviceaccounts|tokenreviews|openid-configuration|deployments|statefulsets|daemonsets' '$WORK/defaults.yaml' \
   && ! grep -nE -- '--allowed-endpoint-hosts|--exclude-namespaces' '$WORK/defaults.yaml'"

"$HELM" template "$REL" "$CHART" -n "$NS" --set "$SHARDED,$ALL_TOGGLES" >"$WORK/sharded.yaml"
check "sharded: one Deployment, Lease, selector and PDB per shard; only the default serves sources" \
  python3 - "$WORK/sharded.yaml" "$REL" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
rel = sys.argv[2]
deps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
assert sorted(deps) == sorted([rel, f"{rel}-shard-a", f"{rel}-shard-b"]), sorted(deps)
def env(d):
    c = d["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in c["env"]}
want = {
    rel: ("default", "tcred.dev/shard notin (a,b)", "true", 2, "20"),
    f"{rel}-shard-a": ("a", "tcred.dev/shard=a", "false", 2, "20"),
    f"{rel}-shard-b": ("b", "tcred.dev/shard=b", "false", 3, "5"),
}
pods = {}
for name, (shard, selector, sources, replicas, rate) in want.items():
    d, e = deps[name], env(deps[name])
    got = (e.get("TCRED_SHARD"), e.get("TCRED_SHARD_SELECTOR"), e.get("TCRED_SERVE_SOURCES"),
           d["spec"]["replicas"], e.get("TCRED_MINT_RATE"))
    assert got == (shard, selector, sources, replicas, rate), f"{name}: {got}"
    assert e["TCRED_LEADER_ELECTION_ID"] == rel, f"{name}: the Lease is derived from the shard by tcred"
    match = d["spec"]["selector"]["matchLabels"]
    labels = d["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in match.items()), f"{name}: selector does not match its pods"
    pods[name] = labels
# The default Deployment keeps the unsharded selector (immutable); the named shards' pods are
# told apart by tcred.dev/shard, which the default shard's pods lack.
assert deps[rel]["spec"]["selector"]["matchLabels"] == {
    "app.kubernetes.io/name": "tcred", "app.kubernetes.io/instance": rel}
assert "tcred.dev/shard" not in pods[rel]
assert pods[f"{rel}-shard-a"]["tcred.dev/shard"] == "a" and pods[f"{rel}-shard-b"]["tcred.dev/shard"] == "b"
pdbs = {d["metadata"]["name"]: d["spec"]["selector"] for d in docs if d["kind"] == "PodDisruptionBudget"}
assert sorted(pdbs) == sorted(want), sorted(pdbs)
assert pdbs[rel]["matchExpressions"] == [{"key": "tcred.dev/shard", "operator": "DoesNotExist"}], pdbs[rel]
rule = next(d for d in docs if d["kind"] == "PrometheusRule")
expr = next(r["expr"] for g in rule["spec"]["groups"] for r in g["rules"] if r.get("alert") == "TcredNoLeader")
assert ") < 3" in expr, expr
EOF
check "unsharded: no shard flags, one Deployment" bash -c \
  "! grep -nE 'TCRED_SHARD|TCRED_SERVE_SOURCES|tcred.dev/shard' '$WORK/defaults.yaml' && [[ \$(grep -c '^kind: Deployment' '$WORK/defaults.yaml') == 2 ]]"

((FAILED == 0)) || { echo "offline checks failed: stopping before touching the cluster" >&2; exit 1; }

# --- 3. PromQL and server-side validation --------------------------------------------------------

step "PromQL of the alerts and the dashboard"
CACHE="${TCRED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tcred}"
PROMQL_CHECK="$CACHE/bin/promql-check-$(cat hack/promql-check/go.sum hack/promql-check/*.go | sha256sum | head -c 12)"
if [[ ! -x $PROMQL_CHECK ]]; then
  mkdir -p "$CACHE/bin"
  (cd hack/promql-check && GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0 \
    go build -trimpath -o "$PROMQL_CHECK.tmp.$$" .) && mv -f "$PROMQL_CHECK.tmp.$$" "$PROMQL_CHECK"
fi
python3 - "$WORK/all.yaml" >"$WORK/rules.yaml" <<'EOF'
import sys, yaml
rule = next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "PrometheusRule")
yaml.safe_dump({"groups": rule["spec"]["groups"]}, sys.stdout)
EOF
check "alerting rules load (rulefmt: PromQL, labels, annotation templates)" "$PROMQL_CHECK" rules "$WORK/rules.yaml"
check "dashboard queries parse" "$PROMQL_CHECK" dashboard "$CHART/files/dashboards/tcred.json"

step "server-side validation of every rendered object"
PO_DIR=$(GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod download -json \
  "github.com/prometheus-operator/prometheus-operator@$PROM_OPERATOR_VERSION" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
for crd in servicemonitors prometheusrules; do
  f="$PO_DIR/$PROM_OPERATOR_CRDS/monitoring.coreos.com_$crd.yaml"
  [[ -f $f ]] || { echo "missing $f in prometheus-operator $PROM_OPERATOR_VERSION" >&2; exit 1; }
  # identical content on every run; other runs may apply it at the same time
  k apply --server-side --force-conflicts --field-manager=tcred-chart-test -f "$f" >/dev/null
done
k wait --for=condition=Established --timeout=60s \
  crd/servicemonitors.monitoring.coreos.com crd/prometheusrules.monitoring.coreos.com >/dev/null
pass "prometheus-operator $PROM_OPERATOR_VERSION CRDs (ServiceMonitor, PrometheusRule) installed"

# The release namespace enforces the "restricted" Pod Security Standard: pods the ReplicaSet creates
# there prove the security context passes it.
for ns in "$NS" "$NS_SCOPED" "$NS_WATCHED" "$NS_SOURCES"; do
  k create namespace "$ns" >/dev/null
  k label namespace "$ns" pod-security.kubernetes.io/enforce=restricted \
    pod-security.kubernetes.io/warn=restricted >/dev/null
done
dry_run() {
  k apply --server-side --force-conflicts --field-manager=tcred-chart-test --dry-run=server -f "$1" \
    >"$WORK/dry.out" 2>&1 || { cat "$WORK/dry.out"; return 1; }
  # warnings (deprecated APIs, Pod Security) count as failures
  ! grep -i 'warning' "$WORK/dry.out"
}
check "all toggles and values: $(grep -c '^kind:' "$WORK/all.yaml") objects accepted, no warnings" dry_run "$WORK/all.yaml"
check "namespace-scoped: $(grep -c '^kind:' "$WORK/scoped.yaml") objects accepted, no warnings" dry_run "$WORK/scoped.yaml"
check "sharded: $(grep -c '^kind:' "$WORK/sharded.yaml") objects accepted, no warnings" dry_run "$WORK/sharded.yaml"

# --- 4. install ----------------------------------------------------------------------------------

step "helm install $REL -n $NS"
# --take-ownership: the CRDs usually exist already (applied by kubectl, or by another release)
"$HELM" install "$REL" "$CHART" -n "$NS" --take-ownership >"$WORK/install.out"
pass "installed"
DEPLOY=deployment/$REL
SA=$REL SA_NS=$NS
check "Deployment exists with 2 replicas" equals "$(jp "$DEPLOY" "$NS" '{.spec.replicas}')" 2
check "pod: runAsNonRoot, user/group 65532, seccomp RuntimeDefault" equals \
  "$(jp "$DEPLOY" "$NS" '{.spec.template.spec.securityContext.runAsNonRoot} {.spec.template.spec.securityContext.runAsUser}:{.spec.template.spec.securityContext.runAsGroup} {.spec.template.spec.securityContext.seccompProfile.type}')" \
  "true 65532:65532 RuntimeDefault"
check "container: read-only root, no privilege escalation, drop ALL" equals \
  "$(jp "$DEPLOY" "$NS" '{.spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem} {.spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation} {.spec.template.spec.containers[0].securityContext.capabilities.drop}')" \
  'true false ["ALL"]'
check "probes on /healthz and /readyz (port http-metrics)" equals \
  "$(jp "$DEPLOY" "$NS" '{.spec.template.spec.containers[0].livenessProbe.httpGet.path} {.spec.template.spec.containers[0].readinessProbe.httpGet.path} {.spec.template.spec.containers[0].ports[0].name}:{.spec.template.spec.containers[0].ports[0].containerPort}')" \
  "/healthz /readyz http-metrics:8080"
check "POD_NAME and POD_NAMESPACE from the downward API" equals \
  "$(jp "$DEPLOY" "$NS" '{.spec.template.spec.containers[0].env[?(@.name=="POD_NAME")].valueFrom.fieldRef.fieldPath} {.spec.template.spec.containers[0].env[?(@.name=="POD_NAMESPACE")].valueFrom.fieldRef.fieldPath}')" \
  "metadata.name metadata.namespace"
check "metrics Service on port 8080 (http-metrics)" equals \
  "$(jp "service/$REL-metrics" "$NS" '{.spec.type} {.spec.ports[0].name}:{.spec.ports[0].port}')" "ClusterIP http-metrics:8080"
check "PodDisruptionBudget minAvailable 1" equals "$(jp "pdb/$REL" "$NS" '{.spec.minAvailable}')" 1
rs_count() { k get rs -n "$NS" -l "app.kubernetes.io/instance=$REL" -o name | wc -l; }
eventually 60 "kube-controller-manager created a ReplicaSet" bash -c "[[ \$('$KUBECTL' get rs -n '$NS' -l app.kubernetes.io/instance=$REL -o name | wc -l) -ge 1 ]]"
# Pods stay Pending (no kubelet); being created at all means Pod Security "restricted" admitted them.
eventually 60 "2 pods admitted under Pod Security \"restricted\"" bash -c \
  "[[ \$('$KUBECTL' get pods -n '$NS' -l app.kubernetes.io/instance=$REL -o name | wc -l) -eq 2 ]]"
check "ClusterRole $REL: no wildcard verbs or resources" bash -c \
  "'$KUBECTL' get clusterrole '$REL' -o json | python3 -c 'import json,sys; r=json.load(sys.stdin)[\"rules\"]; assert r and not any(\"*\" in x.get(k, []) for x in r for k in (\"verbs\",\"resources\",\"apiGroups\")), r'"
for crd in temporarycredentials credentialsources clustercredentialsources; do
  check "CRD $crd.tcred.dev annotated helm.sh/resource-policy=keep" equals \
    "$(jp "crd/$crd.tcred.dev" "" '{.metadata.annotations.helm\.sh/resource-policy}')" keep
done
check "operator can watch secrets cluster-wide" can_i watch secrets -A
check "by default the operator cannot create ServiceAccount tokens" cannot_i create serviceaccounts --subresource=token -n default
check "by default the operator cannot read ServiceAccounts" cannot_i get serviceaccounts -n default
check "by default the operator cannot create TokenReviews" cannot_i create tokenreviews.authentication.k8s.io
check "by default the operator cannot patch Argo Rollouts" cannot_sar patch argoproj.io rollouts default
check "by default the operator cannot patch or list workloads" bash -c \
  "! '$KUBECTL' auth can-i patch deployments.apps -n default --as=system:serviceaccount:$NS:$SA && ! '$KUBECTL' auth can-i list statefulsets.apps -n default --as=system:serviceaccount:$NS:$SA && ! '$KUBECTL' auth can-i patch daemonsets.apps -n default --as=system:serviceaccount:$NS:$SA"
check "operator can patch credential status" can_i patch temporarycredentials.tcred.dev --subresource=status -n default
check "operator can update leases in $NS" can_i update leases.coordination.k8s.io -n "$NS"
check "operator cannot touch leases elsewhere" cannot_i update leases.coordination.k8s.io -n default
check "operator cannot create TemporaryCredentials" cannot_i create temporarycredentials.tcred.dev -n default
check "operator cannot list pods or configmaps" bash -c "! '$KUBECTL' auth can-i list pods -A --as=system:serviceaccount:$NS:$SA && ! '$KUBECTL' auth can-i get configmaps -A --as=system:serviceaccount:$NS:$SA"
eventually 30 "aggregated: the default 'edit' role manages TemporaryCredentials" bash -c \
  "'$KUBECTL' get clusterrole edit -o json | grep -q '\"temporarycredentials\"'"
eventually 30 "aggregated: the default 'view' role reads ClusterCredentialSources" bash -c \
  "'$KUBECTL' get clusterrole view -o json | grep -q '\"clustercredentialsources\"'"
check "ValidatingAdmissionPolicy and its binding installed" bash -c \
  "[[ \$('$KUBECTL' get validatingadmissionpolicy,validatingadmissionpolicybinding -l app.kubernetes.io/instance=$REL -o name | wc -l) -eq 2 ]]"
# A ClusterCredentialSource that allows no namespace: a credential naming it is refused by the
# API server itself (server-side dry run: admission runs, nothing is stored).
k apply -f - >/dev/null <<EOF2
apiVersion: tcred.dev/v1alpha1
kind: ClusterCredentialSource
metadata: {name: $REL-nobody}
spec: {accessKey: {region: ap-southeast-1, secretRef: {name: none, namespace: $NS}}}
EOF2
refused_at_admission() {
  local out
  out=$(k apply --dry-run=server -f - 2>&1 <<EOF2
apiVersion: tcred.dev/v1alpha1
kind: TemporaryCredential
metadata: {name: refused, namespace: $NS}
spec:
  sourceRef: {kind: ClusterCredentialSource, name: $REL-nobody}
  agencyUrn: "iam::0123456789abcdef0123456789abcdef:agency:ops"
EOF2
  ) && { echo "accepted: $out"; return 1; }
  [[ $out == *"namespace $NS is not allowed to use ClusterCredentialSource $REL-nobody"* ]] || { echo "$out"; return 1; }
}
eventually 30 "a credential the ClusterCredentialSource does not allow is refused at admission" refused_at_admission

# --- 5. upgrade ----------------------------------------------------------------------------------

UPGRADE=replicaCount=3,logLevel=debug,rbac.webIdentity.enabled=true,rbac.rolloutRestarts.enabled=true
UPGRADE+=,rbac.rolloutRestarts.argoRollouts=true
UPGRADE+=",controller.allowedEndpointHosts={sts.example.com},controller.excludeNamespaces={team-scoped}"
step "helm upgrade $REL --set $UPGRADE"
OLD_TEMPLATE=$(jp "$DEPLOY" "$NS" '{.metadata.generation}')
"$HELM" upgrade "$REL" "$CHART" -n "$NS" --take-ownership --set "$UPGRADE" >/dev/null
pass "upgraded"
check "rbac.webIdentity: the operator can create ServiceAccount tokens" can_i create serviceaccounts --subresource=token -n default
check "rbac.webIdentity: the operator can read ServiceAccounts (opt-in annotation)" can_i get serviceaccounts -n default
check "rbac.webIdentity: the operator can create TokenReviews" can_i create tokenreviews.authentication.k8s.io
check "rbac.webIdentity: still no ServiceAccount writes" cannot_i update serviceaccounts -n default
check "rbac.rolloutRestarts: the operator can patch deployments" can_i patch deployments.apps -n default
check "rbac.rolloutRestarts: the operator can list statefulsets (selectors)" can_i list statefulsets.apps -n default
check "rbac.rolloutRestarts: still no workload deletes" cannot_i delete deployments.apps -n default
check "rbac.rolloutRestarts.argoRollouts: the operator can patch Rollouts" can_sar patch argoproj.io rollouts default
check "rbac.rolloutRestarts.argoRollouts: still no Rollout deletes" cannot_sar delete argoproj.io rollouts default
check "args carry the allowlist and the excluded namespaces" equals \
  "$(jp "$DEPLOY" "$NS" '{.spec.template.spec.containers[0].args}')" \
  '["controller","--allowed-endpoint-hosts=sts.example.com","--exclude-namespaces=team-scoped"]'
check "Deployment has 3 replicas" equals "$(jp "$DEPLOY" "$NS" '{.spec.replicas}')" 3
check "RUST_LOG=debug" equals \
  "$(jp "$DEPLOY" "$NS" '{.spec.template.spec.containers[0].env[?(@.name=="RUST_LOG")].value}')" debug
check "Deployment generation moved on" bash -c "[[ $(jp "$DEPLOY" "$NS" '{.metadata.generation}') -gt $OLD_TEMPLATE ]]"
eventually 60 "a new ReplicaSet appeared (2 in total)" bash -c \
  "[[ \$('$KUBECTL' get rs -n '$NS' -l app.kubernetes.io/instance=$REL -o name | wc -l) -eq 2 ]]"
check "CRDs still annotated keep" equals \
  "$(jp crd/temporarycredentials.tcred.dev "" '{.metadata.annotations.helm\.sh/resource-policy}')" keep

# --- 6. uninstall --------------------------------------------------------------------------------

step "helm uninstall $REL"
"$HELM" uninstall "$REL" -n "$NS" >/dev/null
pass "uninstalled"
gone() { ! k get "$@" >/dev/null 2>&1; }
check "Deployment gone" gone "$DEPLOY" -n "$NS"
check "ClusterRole and ClusterRoleBinding gone" gone "clusterrole/$REL"
check "ClusterRoleBinding gone" gone "clusterrolebinding/$REL"
check "aggregated ClusterRoles gone" gone "clusterrole/$REL-edit"
check "leader election Role gone" gone "role/$REL-leader-election" -n "$NS"
check "ValidatingAdmissionPolicy gone" bash -c \
  "[[ -z \$('$KUBECTL' get validatingadmissionpolicy,validatingadmissionpolicybinding -l app.kubernetes.io/instance=$REL -o name) ]]"
check "CRDs remain" k get crd temporarycredentials.tcred.dev credentialsources.tcred.dev clustercredentialsources.tcred.dev

# --- 7. namespace-scoped install -----------------------------------------------------------------

step "helm install $REL_SCOPED -n $NS_SCOPED --set watchNamespace=$NS_WATCHED (second install: crds.enabled=false)"
"$HELM" install "$REL_SCOPED" "$CHART" -n "$NS_SCOPED" \
  --set "$SCOPED,crds.enabled=false,replicaCount=1,rbac.webIdentity.enabled=true,rbac.rolloutRestarts.enabled=true" >/dev/null
pass "installed"
SA=$REL_SCOPED SA_NS=$NS_SCOPED
check "TCRED_NAMESPACE=$NS_WATCHED" equals \
  "$(jp "deployment/$REL_SCOPED" "$NS_SCOPED" '{.spec.template.spec.containers[0].env[?(@.name=="TCRED_NAMESPACE")].value}')" "$NS_WATCHED"
check "no cluster-wide ClusterRole $REL_SCOPED" gone "clusterrole/$REL_SCOPED"
check "ClusterRole $REL_SCOPED-cluster names only cluster-scoped resources" bash -c \
  "'$KUBECTL' get clusterrole '$REL_SCOPED-cluster' -o json | python3 -c 'import json,sys; r=json.load(sys.stdin)[\"rules\"]; res={x for y in r for x in y.get(\"resources\", [])}; assert res=={\"clustercredentialsources\",\"clustercredentialsources/status\",\"namespaces\",\"tokenreviews\"}, res'"
check "rbac.webIdentity scoped: ServiceAccount tokens in $NS_WATCHED only" bash -c \
  "'$KUBECTL' auth can-i create serviceaccounts --subresource=token -n $NS_WATCHED --as=system:serviceaccount:$SA_NS:$SA && ! '$KUBECTL' auth can-i create serviceaccounts --subresource=token -n default --as=system:serviceaccount:$SA_NS:$SA"
check "rbac.rolloutRestarts scoped: workload patches in $NS_WATCHED only" bash -c \
  "'$KUBECTL' auth can-i patch deployments.apps -n $NS_WATCHED --as=system:serviceaccount:$SA_NS:$SA && ! '$KUBECTL' auth can-i patch deployments.apps -n default --as=system:serviceaccount:$SA_NS:$SA"
check "Role $REL_SCOPED in $NS_WATCHED" k get role "$REL_SCOPED" -n "$NS_WATCHED"
check "can manage secrets in $NS_WATCHED" can_i create secrets -n "$NS_WATCHED"
check "can watch TemporaryCredentials in $NS_WATCHED" can_i watch temporarycredentials.tcred.dev -n "$NS_WATCHED"
check "cannot read secrets in other namespaces" cannot_i get secrets -n default
check "cannot list secrets cluster-wide" cannot_i list secrets -A
check "cannot watch TemporaryCredentials cluster-wide" cannot_i watch temporarycredentials.tcred.dev -A
check "can watch ClusterCredentialSources" can_i watch clustercredentialsources.tcred.dev
check "can read the watched Namespace only" bash -c \
  "'$KUBECTL' auth can-i get namespace/$NS_WATCHED --as=system:serviceaccount:$SA_NS:$SA && ! '$KUBECTL' auth can-i get namespace/default --as=system:serviceaccount:$SA_NS:$SA"
check "can read and update the named source Secret in $NS_SOURCES" bash -c \
  "'$KUBECTL' auth can-i update secret/corp-ic-session -n $NS_SOURCES --as=system:serviceaccount:$SA_NS:$SA"
check "cannot read other Secrets in $NS_SOURCES" cannot_i get secret/other -n "$NS_SOURCES"
check "no PodDisruptionBudget with one replica" gone "pdb/$REL_SCOPED" -n "$NS_SCOPED"
"$HELM" uninstall "$REL_SCOPED" -n "$NS_SCOPED" >/dev/null
check "uninstalled: Role and ClusterRole gone" bash -c \
  "! '$KUBECTL' get role '$REL_SCOPED' -n '$NS_WATCHED' 2>/dev/null && ! '$KUBECTL' get clusterrole '$REL_SCOPED-cluster' 2>/dev/null"

# --- 8. pod identity -------------------------------------------------------------------------------

step "pod identity (podIdentity.enabled)"
PI=podIdentity.enabled=true,podIdentity.certManager.enabled=false
check "lint: podIdentity on (tcred's certificates), with the NetworkPolicy" \
  "$HELM" lint --strict "$CHART" --set "$PI,networkPolicy.enabled=true"
check "lint: podIdentity on with cert-manager" "$HELM" lint --strict "$CHART" --set podIdentity.enabled=true,podIdentity.certManager.enabled=true
check "a bad failurePolicy is refused (schema)" bash -c "! '$HELM' template x '$CHART' --set podIdentity.enabled=true,podIdentity.webhook.failurePolicy=Maybe"
"$HELM" template "$REL" "$CHART" -n "$NS" >"$WORK/default.yaml"
"$HELM" template "$REL" "$CHART" -n "$NS" --set podIdentity.enabled=false >"$WORK/pi-off.yaml"
check "podIdentity off renders exactly the defaults" diff "$WORK/default.yaml" "$WORK/pi-off.yaml"
# The CRDs document the pod opt-in label (spec.podIdentity); look only at what the chart itself installs.
"$HELM" template "$REL" "$CHART" -n "$NS" --set crds.enabled=false >"$WORK/default-no-crds.yaml"
check "the defaults render no pod-identity object, port, flag or volume" bash -c \
  "! grep -Eq 'pod-identity|kind: (MutatingWebhookConfiguration|DaemonSet)|TCRED_WEBHOOK|TCRED_CREDENTIALS_ENDPOINT|https-creds|/etc/tcred/tls' '$WORK/default-no-crds.yaml'"
"$HELM" template "$REL_PI" "$CHART" -n "$NS_PI" --set podIdentity.enabled=true,podIdentity.certManager.enabled=true >"$WORK/pi-cm.yaml"
check "cert-manager: Issuers and Certificates, CA injection, tcred does not manage certificates" python3 - "$WORK/pi-cm.yaml" "$REL_PI" "$NS_PI" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
rel, ns = sys.argv[2], sys.argv[3]
kinds = sorted(d["kind"] for d in docs if d["apiVersion"] == "cert-manager.io/v1")
assert kinds == ["Certificate", "Certificate", "Issuer", "Issuer"], kinds
serving = next(d for d in docs if d["kind"] == "Certificate" and d["metadata"]["name"] == f"{rel}-serving")
assert serving["spec"]["secretName"] == f"{rel}-tls"
assert serving["spec"]["dnsNames"] == [f"{rel}-credentials.{ns}.svc", f"{rel}-webhook.{ns}.svc"], serving
mwc = next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")
assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{ns}/{rel}-serving"
dep = next(d for d in docs if d["kind"] == "Deployment")
env = {e["name"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
assert "TCRED_MANAGE_CERTIFICATES" not in env and "TCRED_WEBHOOK_ADDRESS" in env, env
assert not any(d["kind"] == "Role" and d["metadata"]["name"].endswith("-certificates") for d in docs)
EOF
"$HELM" template "$REL_PI" "$CHART" -n "$NS_PI" --set "$PI,crds.enabled=false" >"$WORK/pi.yaml"
k create namespace "$NS_PI" >/dev/null
# The agent runs on the host network: the namespace allows it (Pod Security "privileged").
k label namespace "$NS_PI" pod-security.kubernetes.io/enforce=privileged >/dev/null
check "podIdentity: $(grep -c '^kind:' "$WORK/pi.yaml") objects accepted server-side" dry_run "$WORK/pi.yaml"
"$HELM" install "$REL_PI" "$CHART" -n "$NS_PI" --set "$PI,crds.enabled=false" >"$WORK/install-pi.out"
pass "installed $REL_PI with podIdentity"
DS=daemonset/$REL_PI-agent
check "agent: host network, ClusterFirstWithHostNet, no ServiceAccount token" equals \
  "$(jp "$DS" "$NS_PI" '{.spec.template.spec.hostNetwork} {.spec.template.spec.dnsPolicy} {.spec.template.spec.automountServiceAccountToken}')" \
  "true ClusterFirstWithHostNet false"
check "agent: listens on the node IP (downward API) port 8182" equals \
  "$(jp "$DS" "$NS_PI" '{.spec.template.spec.containers[0].args} {.spec.template.spec.containers[0].env[?(@.name=="NODE_IP")].valueFrom.fieldRef.fieldPath} {.spec.template.spec.containers[0].ports[0].hostPort}')" \
  '["agent","--listen=$(NODE_IP)"] status.hostIP 8182'
check "agent: upstream is the credentials Service over TLS, CA from the serving Secret (ca.crt only, optional)" equals \
  "$(jp "$DS" "$NS_PI" '{.spec.template.spec.containers[0].env[?(@.name=="TCRED_AGENT_UPSTREAM")].value} {.spec.template.spec.volumes[0].secret.secretName} {.spec.template.spec.volumes[0].secret.items[0].key} {.spec.template.spec.volumes[0].secret.optional}')" \
  "https://$REL_PI-credentials.$NS_PI.svc:8443 $REL_PI-tls ca.crt true"
check "agent: non-root, read-only root, drop ALL, seccomp RuntimeDefault" equals \
  "$(jp "$DS" "$NS_PI" '{.spec.template.spec.securityContext.runAsNonRoot} {.spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem} {.spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation} {.spec.template.spec.containers[0].securityContext.capabilities.drop} {.spec.template.spec.securityContext.seccompProfile.type}')" \
  'true true false ["ALL"] RuntimeDefault'
check "Services: credentials 8443, webhook 443" equals \
  "$(jp "service/$REL_PI-credentials" "$NS_PI" '{.spec.ports[0].port}') $(jp "service/$REL_PI-webhook" "$NS_PI" '{.spec.ports[0].port}:{.spec.ports[0].targetPort}')" \
  "8443 443:https-webhook"
MWC=mutatingwebhookconfiguration/$REL_PI-pod-identity
check "webhook: failurePolicy Fail, only labelled pods, CREATE pods, /mutate-pods on the webhook Service" equals \
  "$(jp "$MWC" "" '{.webhooks[0].failurePolicy} {.webhooks[0].objectSelector.matchExpressions[0].key}:{.webhooks[0].objectSelector.matchExpressions[0].operator} {.webhooks[0].rules[0].operations} {.webhooks[0].clientConfig.service.name}{.webhooks[0].clientConfig.service.path}')" \
  "Fail tcred.dev/pod-identity:Exists [\"CREATE\"] $REL_PI-webhook/mutate-pods"
check "webhook: kube-system and the release namespace excluded" equals \
  "$(jp "$MWC" "" '{.webhooks[0].namespaceSelector.matchExpressions[0].operator} {.webhooks[0].namespaceSelector.matchExpressions[0].values}')" \
  "NotIn [\"kube-system\",\"$NS_PI\"]"
check "controller: credentials and webhook ports, TLS Secret mounted (optional), certificates managed" equals \
  "$(jp "deployment/$REL_PI" "$NS_PI" '{.spec.template.spec.containers[0].ports[1].containerPort} {.spec.template.spec.containers[0].ports[2].containerPort} {.spec.template.spec.volumes[0].secret.secretName} {.spec.template.spec.volumes[0].secret.optional} {.spec.template.spec.containers[0].env[?(@.name=="TCRED_MANAGE_CERTIFICATES")].value}')" \
  "8443 9443 $REL_PI-tls true true"
check "a bootstrap serving Secret exists before the leader writes its own (kept by Helm)" equals \
  "$(jp "secret/$REL_PI-tls" "$NS_PI" '{.type} {.metadata.annotations.helm\.sh/resource-policy}') $(jp "secret/$REL_PI-tls" "$NS_PI" '{.data.tls\.crt}' | base64 -d | head -1)" \
  "kubernetes.io/tls keep -----BEGIN CERTIFICATE-----"
SA=$REL_PI SA_NS=$NS_PI
check "controller can create TokenReviews" can_i create tokenreviews.authentication.k8s.io
check "controller can get and patch its own webhook configuration only" bash -c \
  "'$KUBECTL' auth can-i patch $MWC --as=system:serviceaccount:$SA_NS:$SA && ! '$KUBECTL' auth can-i patch mutatingwebhookconfiguration/other --as=system:serviceaccount:$SA_NS:$SA"
check "controller can write its certificate Secrets in $NS_PI" bash -c \
  "'$KUBECTL' auth can-i patch secret/$REL_PI-tls -n $NS_PI --as=system:serviceaccount:$SA_NS:$SA && '$KUBECTL' auth can-i create secrets -n $NS_PI --as=system:serviceaccount:$SA_NS:$SA"
check "the agent's ServiceAccount has no rights" bash -c \
  "! '$KUBECTL' auth can-i get secrets -n $NS_PI --as=system:serviceaccount:$NS_PI:$REL_PI-agent && ! '$KUBECTL' auth can-i create tokenreviews.authentication.k8s.io --as=system:serviceaccount:$NS_PI:$REL_PI-agent"
"$HELM" uninstall "$REL_PI" -n "$NS_PI" >/dev/null
check "uninstalled: webhook configuration, DaemonSet and pod-identity RBAC gone" bash -c \
  "! '$KUBECTL' get $MWC 2>/dev/null && ! '$KUBECTL' get $DS -n $NS_PI 2>/dev/null && ! '$KUBECTL' get clusterrole $REL_PI-pod-identity 2>/dev/null"

printf '\nchart-test took %ds\nchart-test: %d passed, %d failed\n' "$((SECONDS - START))" "$PASSED" "$FAILED"
((FAILED == 0))
