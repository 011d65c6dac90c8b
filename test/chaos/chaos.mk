# The crash test: the controller, as its own process, killed with SIGKILL at
# random moments while it reconciles many requests (test/chaos).
#
# Included by the root Makefile, which defines GO and the controlplane target.

CHAOS_REQUESTS ?= 1000
CHAOS_KILLS ?= 20

.PHONY: chaos-crash
chaos-crash: controlplane ## Crash test: 1000 requests, the controller kill -9'd 20 times, then every invariant checked (CHAOS_REQUESTS, CHAOS_KILLS)
	$(GO) test -count=1 -v -timeout 60m ./test/chaos -run '^TestCrash$$' -args -requests $(CHAOS_REQUESTS) -kills $(CHAOS_KILLS) -converge-timeout 20m
