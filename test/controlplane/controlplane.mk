# The local control plane: kube-apiserver and etcd for envtest and `promised up`.
#
# Release binaries cannot be downloaded where promised is built and tested
# (only the Go module proxy and Debian's packages are reachable), so both are
# compiled from Go modules by the wrapper module in test/controlplane/build,
# which has its own go.mod so it never enters the main module's build graph.
# The result is cached per version under $(CACHE) and built only once.
#
# Included by the root Makefile, which defines GO and CACHE.

CONTROLPLANE_K8S_VERSION := v1.37.0
CONTROLPLANE_ETCD_VERSION := v3.7.3
# The tag time of k8s.io/kubernetes v1.37.0 on the module proxy: a fixed build
# date keeps rebuilds byte-for-byte comparable.
CONTROLPLANE_BUILD_DATE := 2026-08-26T10:44:20Z

# CONTROLPLANE_BIN holds kube-apiserver and etcd. The version is part of the
# path so that bumping CONTROLPLANE_K8S_VERSION builds afresh instead of
# silently reusing binaries of another version.
CONTROLPLANE_BIN ?= $(CACHE)/controlplane/$(CONTROLPLANE_K8S_VERSION)
CONTROLPLANE_SRC := test/controlplane/build
CONTROLPLANE_APISERVER := $(CONTROLPLANE_BIN)/kube-apiserver
CONTROLPLANE_ETCD := $(CONTROLPLANE_BIN)/etcd

# The harness (test/controlplane.BinDir) reads PROMISED_CONTROLPLANE_BIN
# first; KUBEBUILDER_ASSETS is exported too so that plain envtest users and
# tools that only know the kubebuilder convention find the same binaries.
export PROMISED_CONTROLPLANE_BIN := $(abspath $(CONTROLPLANE_BIN))
export KUBEBUILDER_ASSETS := $(abspath $(CONTROLPLANE_BIN))

# Without these /version reports v0.0.0-master, which clients (and our own
# test) read as "not v1.37.0". Both copies of the version variables are set,
# as hack/lib/version.sh does for a release build.
CONTROLPLANE_VERSION_MAJOR := $(word 1,$(subst ., ,$(patsubst v%,%,$(CONTROLPLANE_K8S_VERSION))))
CONTROLPLANE_VERSION_MINOR := $(word 2,$(subst ., ,$(patsubst v%,%,$(CONTROLPLANE_K8S_VERSION))))
CONTROLPLANE_VERSION_VARS := gitVersion=$(CONTROLPLANE_K8S_VERSION) gitMajor=$(CONTROLPLANE_VERSION_MAJOR) \
	gitMinor=$(CONTROLPLANE_VERSION_MINOR) gitTreeState=archive buildDate=$(CONTROLPLANE_BUILD_DATE)
CONTROLPLANE_LDFLAGS := -s -w \
	$(foreach v,$(CONTROLPLANE_VERSION_VARS),-X k8s.io/component-base/version.$(v) -X k8s.io/client-go/pkg/version.$(v))

# GOWORK=off: a go.work at the root must not pull the wrapper module into the
# main module's workspace or the other way round.
CONTROLPLANE_GO := GOWORK=off $(GO)

.PHONY: controlplane
controlplane: $(CONTROLPLANE_APISERVER) $(CONTROLPLANE_ETCD) ## Build kube-apiserver and etcd from Go modules into the cache (once, ~10 min)
	@:

# No prerequisites on purpose: the output path is versioned, and a fresh clone
# gives every source file a new mtime, which would otherwise force a
# 10-minute rebuild on every CI run. Each binary is built under a temporary
# name and renamed, so an interrupted build never leaves a binary that looks
# complete.
$(CONTROLPLANE_APISERVER):
	@echo ">> building kube-apiserver $(CONTROLPLANE_K8S_VERSION) from source (about 10 minutes on 2 cores, once)"
	@mkdir -p $(@D)
	@tmp="$(abspath $@).tmp.$$$$"; \
	  $(CONTROLPLANE_GO) build -C $(CONTROLPLANE_SRC) -trimpath -ldflags '$(CONTROLPLANE_LDFLAGS)' \
	    -o "$$tmp" k8s.io/kubernetes/cmd/kube-apiserver \
	  && mv -f "$$tmp" "$(abspath $@)" || { rm -f "$$tmp"; exit 1; }
	@echo ">> kube-apiserver $(CONTROLPLANE_K8S_VERSION) is in $(@D)"

$(CONTROLPLANE_ETCD):
	@echo ">> building etcd $(CONTROLPLANE_ETCD_VERSION) from source (about 2 minutes on 2 cores, once)"
	@mkdir -p $(@D)
	@tmp="$(abspath $@).tmp.$$$$"; \
	  $(CONTROLPLANE_GO) build -C $(CONTROLPLANE_SRC) -trimpath -ldflags '-s -w' -o "$$tmp" ./etcd \
	  && mv -f "$$tmp" "$(abspath $@)" || { rm -f "$$tmp"; exit 1; }
	@echo ">> etcd $(CONTROLPLANE_ETCD_VERSION) is in $(@D)"

.PHONY: controlplane-clean
controlplane-clean: ## Remove the cached kube-apiserver and etcd (the next `make controlplane` rebuilds them)
	rm -rf $(CONTROLPLANE_BIN)
