# promised: build, test and run the platform. `make help` lists the targets.

SHELL := /bin/bash
GO ?= go
CACHE ?= $(HOME)/.cache/promised
TOOLS := $(CACHE)/tools
CONTROLLER_GEN_VERSION := v0.23.0
CONTROLLER_GEN := $(TOOLS)/controller-gen-$(CONTROLLER_GEN_VERSION)
BIN := bin

export PROMISED_CACHE := $(CACHE)

.DEFAULT_GOAL := help

include test/controlplane/controlplane.mk
include statestore/statestore.mk
include test/chaos/chaos.mk
include cmd/images.mk
include test/bench/bench.mk

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-20s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build the promised binary into bin/
	$(GO) build -o $(BIN)/promised ./cmd/promised

.PHONY: run
run: build controlplane ## Run the local platform with the example requests (promised up --with-examples; Ctrl-C stops it)
	$(BIN)/promised up --with-examples

.PHONY: test
test: deps controlplane generate-check vet ## Install what the tests need, then run every test with -race
	$(GO) test -race -count=1 -timeout 40m ./...

.PHONY: vet
vet: ## go vet and gofmt
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi

.PHONY: lint
lint: vet ## Static checks (go vet, gofmt)

.PHONY: deps
deps: ## Install the system tools the tests use (git, PostgreSQL, docker CLI) when missing
	@command -v git >/dev/null || { echo ">> installing git with apt-get (about 20 s)"; apt-get update -qq && apt-get install -y -qq git; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo ">> installing PostgreSQL with apt-get (about 30 s; the Database tests start throwaway servers)"; \
	  command -v apt-get >/dev/null || { echo "install PostgreSQL (initdb and pg_ctl) with your package manager, then run make test again"; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
	@command -v docker >/dev/null || { echo ">> installing the docker CLI and engine with apt-get (about 1 min)"; apt-get update -qq && apt-get install -y -qq docker.io; }
	@docker info >/dev/null 2>&1 || { echo "the Docker engine is not running: start it (e.g. 'service docker start') and run make test again"; exit 1; }

$(CONTROLLER_GEN):
	@echo ">> building controller-gen $(CONTROLLER_GEN_VERSION) (about 1 minute, once)"
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
	mv $(TOOLS)/controller-gen $(CONTROLLER_GEN)

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Regenerate deepcopy code and CRD YAML from api/
	$(CONTROLLER_GEN) object paths=./api/...
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=config/crd

.PHONY: generate-check
generate-check: generate ## Fail when generated code differs from what is checked in
	@git diff --exit-code -- api config/crd || { echo "generated files are stale: run 'make generate' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- api config/crd)" || { git status --porcelain -- api config/crd; echo "generated files are not committed: run 'make generate' and commit"; exit 1; }

.PHONY: chaos
chaos: controlplane chaos-crash ## The long reliability runs: the crash test (1,000 requests, 20 kills) and 1,000 create/delete cycles for leaks
	$(GO) test -count=1 -v -timeout 60m ./test/leak -run TestMemoryAndGoroutinesStayFlat -args -cycles 1000
