# The whole-platform benchmark, included from the root Makefile (which
# defines GO, `deps` (git, PostgreSQL) and includes controlplane.mk for the
# `controlplane` target).
#
# It starts a control plane, a Git server and `promised controller` as its
# own process, creates the requests, forces a re-reconcile, changes the
# promises and measures the apiserver's and the state store's ceilings in
# the same run, then prints a table beside the targets. BENCH_FLAGS adds
# flags, for example BENCH_FLAGS='-profile .bench -json'.

BENCH_FLAGS ?=

.PHONY: bench
bench: deps controlplane ## Benchmark the whole platform with 1,000 requests (under 2 minutes; prints a table, BENCH_FLAGS='-profile DIR' for profiles)
	$(GO) run ./test/bench/platform -requests 1000 $(BENCH_FLAGS)

.PHONY: bench-10k
bench-10k: deps controlplane ## Benchmark the whole platform with 10,000 requests (7 to 8 minutes on 2 cores)
	$(GO) run ./test/bench/platform -requests 10000 $(BENCH_FLAGS)
