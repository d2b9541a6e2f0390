# tcred developer commands. `make help` lists them.
#
#   make demo    local control plane + Huawei simulator + operator + an example credential
#   make test    everything CI runs: lint, CRD drift, unit, cluster, conformance, chart, image

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
VENV := .venv
PYTHON := $(VENV)/bin/python
CLUSTER := hack/cluster.sh
# kubectl and helm built for the local control plane (same version as the apiserver)
K8S_BIN = $(shell $(CLUSTER) bin-dir kubernetes)
# The Go SDK consumer, a static binary (conformance/consumer-go)
CONSUMER_GO := $(CURDIR)/target/consumer-go
# Cluster tests mostly wait on timers; run several at once.
TEST_THREADS ?= 6

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# --- the two README commands -------------------------------------------------------------------

.PHONY: demo
demo: ## Bring up the local demo: control plane, simulator, operator, an example credential
	hack/demo.sh up

.PHONY: demo-down
demo-down: ## Stop the demo's operator and simulator (the control plane keeps running)
	hack/demo.sh down

.PHONY: test
test: lint deny crds-check unit cluster-up node-up cluster-test conformance chart-test image-check ## Everything CI runs
	@echo "all checks passed"

# --- pieces ------------------------------------------------------------------------------------

.PHONY: lint
lint: ## rustfmt, clippy (warnings are errors) and the architecture check over the workspace
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	python3 hack/arch_check.py .

# cargo-deny, pinned; installed once (about 25 minutes cold on a busy 2-core machine, nothing when
# present). Advisories are not checked: their database cannot be fetched here (deny.toml).
CARGO_DENY_VERSION := 0.20.2

.PHONY: deny-tool
deny-tool: ## Install the pinned cargo-deny unless it is already there
	@$(CARGO) deny --version 2>/dev/null | grep -qx 'cargo-deny $(CARGO_DENY_VERSION)' \
	  || $(CARGO) install --locked cargo-deny --version $(CARGO_DENY_VERSION)

.PHONY: deny
deny: deny-tool ## Licenses, banned crates, duplicate versions (warnings) and sources of the workspace
	@# cargo-deny reads the metadata of every platform's dependencies: fetch them first (a build
	@# downloads only this host's), so the offline check also works on a fresh machine.
	$(CARGO) fetch --locked --quiet
	$(CARGO) deny --workspace --locked --offline check bans licenses sources

.PHONY: crds
crds: ## Regenerate crds/ and the chart's copy from the Rust types
	$(CARGO) run --quiet --locked --bin tcred -- crd --output-dir crds
	$(CARGO) run --quiet --locked --bin tcred -- crd --output-dir charts/tcred/files/crds

.PHONY: crds-check
crds-check: crds ## Fail when the committed CRDs differ from the Rust types
	@git diff --exit-code -- crds charts/tcred/files/crds || { echo "CRDs drifted: run 'make crds' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- crds charts/tcred/files/crds)" || { git status --porcelain -- crds charts/tcred/files/crds; echo "CRDs not committed: run 'make crds' and commit"; exit 1; }

.PHONY: unit
unit: ## Unit tests of the operator (signer, schedule, planning, ...) and the simulator
	$(CARGO) test --locked --workspace --lib --bins

.PHONY: cluster-up
cluster-up: ## Start the local control plane (builds and caches the binaries on first use)
	$(CLUSTER) up

.PHONY: cluster-down
cluster-down: ## Stop the local control plane
	$(CLUSTER) down

.PHONY: cluster-status
cluster-status: ## Show the local control plane
	$(CLUSTER) status

.PHONY: node-up
node-up: cluster-up ## Start the test node (containerd, kubelet, kube-scheduler; docs/rig.md). A failure is reported, not fatal
	@hack/node.sh up || echo "node-up: the node did not start; the real-pod tests (tests/node.rs) will fail with: $$(cat target/cluster/node/failed 2>/dev/null)"

.PHONY: node-down
node-down: ## Stop the test node and remove what it left on the machine
	hack/node.sh down

.PHONY: node-status
node-status: ## Show the test node
	hack/node.sh status

.PHONY: cluster-test
cluster-test: cluster-up node-up venv consumer-go ## Black-box tests on the control plane with the simulator
	$(CARGO) build --locked --package tcred-huawei-sim
	TCRED_REQUIRE_CLUSTER=1 TCRED_KUBECTL=$(K8S_BIN)/kubectl TCRED_HELM=$(shell $(CLUSTER) bin-dir helm)/helm \
	  TCRED_PYTHON=$(CURDIR)/$(PYTHON) TCRED_CONSUMER_GO_BIN=$(CONSUMER_GO) $(CARGO) test --locked --no-fail-fast --test '*' -- --test-threads=$(TEST_THREADS)

.PHONY: venv
venv: $(VENV)/.installed ## Python venv with Huawei's official SDK
$(VENV)/.installed: conformance/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r conformance/requirements.txt
	touch $@

.PHONY: consumer-go
consumer-go: ## Huawei's Go SDK consumer (conformance/consumer-go): go test, then a static binary
	cd conformance/consumer-go && GOTOOLCHAIN=local go test ./... \
	  && CGO_ENABLED=0 GOTOOLCHAIN=local go build -trimpath -o $(CONSUMER_GO) .

.PHONY: conformance
conformance: venv consumer-go ## Huawei's Python and Go SDKs against the simulator
	$(CARGO) build --locked --package tcred-huawei-sim
	TCRED_SIM_BIN=$(CURDIR)/target/debug/tcred-huawei-sim TCRED_CONSUMER_GO_BIN=$(CONSUMER_GO) \
	  $(PYTHON) -m pytest conformance -q

.PHONY: manifests
manifests: ## Render deploy/tcred.yaml (the chart with defaults, for kubectl users)
	$(shell $(CLUSTER) build >/dev/null; $(CLUSTER) bin-dir helm)/helm template tcred charts/tcred \
	  --namespace tcred-system --set crds.enabled=false > deploy/tcred.yaml

.PHONY: chart-test
chart-test: cluster-up manifests ## helm lint, install/upgrade/uninstall against the control plane, manifest drift
	hack/chart-test.sh
	@git diff --exit-code -- deploy || { echo "deploy/tcred.yaml drifted from the chart: run 'make manifests' and commit"; exit 1; }
	@# the kubectl install path: the rendered manifest is accepted by the apiserver
	$(K8S_BIN)/kubectl --kubeconfig target/cluster/kubeconfig create namespace tcred-system --dry-run=client -o yaml \
	  | $(K8S_BIN)/kubectl --kubeconfig target/cluster/kubeconfig apply -f - >/dev/null
	$(K8S_BIN)/kubectl --kubeconfig target/cluster/kubeconfig apply --dry-run=server -f deploy/tcred.yaml >/dev/null
	@echo "deploy/tcred.yaml applies cleanly (server-side dry run)"

.PHONY: image
image: ## Build the container image with buildah
	hack/image.sh build

.PHONY: image-check
image-check: ## Build the image and check user, entrypoint, size and that tcred runs
	hack/image.sh check

.PHONY: bench
bench: cluster-up ## Benchmarks: print numbers, write target/bench/*.json (TCRED_BENCH_N=10000 for scale)
	$(CARGO) build --locked --package tcred-huawei-sim
	$(CARGO) bench --locked --bench create_to_secret

# Chaos soak (docs/benchmarks.md, "Chaos soak"): hundreds of short-lived credentials under simulator
# faults, leader SIGKILLs and one API server restart. Not part of `make test`; run by hand.
# SOAK_PROFILE=dev skips the release build (figures are then a floor). Knobs: TCRED_SOAK_* (benches/soak.rs).
SOAK_PROFILE ?= bench

.PHONY: soak
soak: cluster-up ## Chaos soak, about 20 min (TCRED_SOAK_CREDENTIALS=300, TCRED_SOAK_MINUTES=15); writes target/bench/soak.json
	$(CARGO) build --locked --package tcred-huawei-sim
	$(CARGO) bench --locked --profile $(SOAK_PROFILE) --bench soak
