# State store targets, included from the root Makefile.

.PHONY: bench-statestore
bench-statestore: ## Benchmark the Git state store writer against the git CLI (about 10 minutes; prints a table)
	$(GO) run ./statestore/bench $(BENCH_STATESTORE_FLAGS)
