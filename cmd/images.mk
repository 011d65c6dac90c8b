# Container images and installation, included from the root Makefile (which
# defines GO and BIN and the build target).
#
# No base image can be pulled where promised is built, so the Go binaries are
# compiled on the host (static, CGO_ENABLED=0) and copied onto FROM scratch
# images by the Dockerfiles in cmd/promised and cmd/promised-stage. The work
# is done by `promised build` (package cmd/imagebuild), so `make images` and
# a platform engineer's `promised build PROMISE` make the same images, and
# test/images tests that code.

KUBECTL ?= kubectl

.PHONY: images
images: build ## Build the controller image and every built-in stage's image with the local Docker engine
	$(BIN)/promised build --all --controller

.PHONY: image-stages
image-stages: build ## Build promised.dev/stage/<name>:v0.1.0 for each stage `promised stage list` prints
	$(BIN)/promised build --all

.PHONY: image-controller
image-controller: build ## Build the controller image promised.dev/promised:v0.1.0
	$(BIN)/promised build --controller

.PHONY: test-images
test-images: ## Build the stage images and run every promise's test cases in them (needs Docker)
	$(GO) test -count=1 -timeout 20m ./test/images/

.PHONY: test-install
test-install: controlplane ## Install config/ (CRDs, RBAC, Deployment) into a local kube-apiserver and run the controller under its RBAC
	$(GO) test -count=1 -timeout 10m ./test/install/

.PHONY: deploy
deploy: ## Install promised into the cluster of the current kubectl context (kubectl apply --server-side -k config)
	$(KUBECTL) apply --server-side -k config

.PHONY: undeploy
undeploy: ## Remove what `make deploy` installed (CRDs included: every Promise, Destination and GitStateStore goes with them)
	$(KUBECTL) delete --ignore-not-found -k config
