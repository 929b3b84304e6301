# The two commands of the README: `make run` and `make test`. Hardening runs beside them:
# `make fuzz`, `make soak`, `make test-sanitize` (tests/README.md says what each covers and costs).
BUILD   ?= build
JOBS    ?= $(shell nproc)
MAKEFLAGS += --no-print-directory
LISTEN  ?= 127.0.0.1:10261
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNODEMETER_WERROR=ON
# libFuzzer needs clang: the fuzz targets get a build directory of their own (tests/fuzz/).
FUZZ_BUILD   ?= build-fuzz
FUZZ_FLAGS   ?= -DCMAKE_BUILD_TYPE= "-DCMAKE_CXX_FLAGS=-O1 -gline-tables-only"
FUZZ_SECONDS ?= 600
SOAK_SECONDS ?= 1800

.PHONY: all deps test-deps build run test fuzz-smoke fuzz soak test-sanitize bench format clean

all: build

deps:
	@scripts/deps.sh build

test-deps:
	@scripts/deps.sh test

$(BUILD)/CMakeCache.txt:
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null

build: deps $(BUILD)/CMakeCache.txt
	@cmake --build $(BUILD) -j $(JOBS) --target nodemeter

run: build
	@echo "nodemeter agent on this host's cgroups: curl http://$(LISTEN)/metrics/resource (also /metrics/cadvisor, /metrics, /healthz); Ctrl-C stops it."
	@$(BUILD)/nodemeter agent --listen $(LISTEN)

test: test-deps $(BUILD)/CMakeCache.txt
	@cmake --build $(BUILD) -j $(JOBS)
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 600
	@$(MAKE) fuzz-smoke

$(FUZZ_BUILD)/CMakeCache.txt:
	@CXX=clang++ cmake -S . -B $(FUZZ_BUILD) $(FUZZ_FLAGS) >/dev/null

# Each fuzz target for 10 s (a CTest test each, label fuzz-smoke); part of `make test`.
fuzz-smoke: test-deps $(FUZZ_BUILD)/CMakeCache.txt
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzzers
	@cd $(FUZZ_BUILD) && ctest --output-on-failure -j $(JOBS) -L '^fuzz-smoke$$'

# Each fuzz target for FUZZ_SECONDS; prints and records executions per second.
fuzz: test-deps $(FUZZ_BUILD)/CMakeCache.txt
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzzers
	@tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

# The churn soak for SOAK_SECONDS (the short form runs in `make test`).
soak: test-deps $(BUILD)/CMakeCache.txt
	@cmake --build $(BUILD) -j $(JOBS) --target nodemeter
	@SOAK_SECONDS=$(SOAK_SECONDS) NODEMETER_BINARY=$(BUILD)/nodemeter NODEMETER_SOURCE_DIR=$(CURDIR) \
		python3 tests/e2e/churn_soak.py

# The whole suite under ASan + UBSan, then the threaded parts (server, sampler, agent, Kubernetes
# client, aggregator) under TSan. Built by clang at -O1: g++ takes several times longer on the Beast
# sources under ASan and, at -O2, warns maybe-uninitialized inside libstdc++'s <regex>. -Werror stays
# with the g++ build `make test` does; here a warning is not what is looked for.
SANITIZE_FLAGS = -DCMAKE_BUILD_TYPE= "-DCMAKE_CXX_FLAGS=-O1 -gline-tables-only" -DNODEMETER_WERROR=OFF
SANITIZER_ENV = NODEMETER_SANITIZED=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/tsan.supp
TSAN_TESTS = ^(api\.|agent\.|kube\.)|e2e: (agent_real_cgroups|churn_soak|faults|cluster_top)$$
test-sanitize: test-deps
	@CXX=clang++ cmake -S . -B build-asan $(SANITIZE_FLAGS) -DNODEMETER_SANITIZE=address,undefined >/dev/null
	@cmake --build build-asan -j $(JOBS)
	@cd build-asan && $(SANITIZER_ENV) ctest --output-on-failure -j $(JOBS) --timeout 900
	@CXX=clang++ cmake -S . -B build-tsan $(SANITIZE_FLAGS) -DNODEMETER_SANITIZE=thread >/dev/null
	@cmake --build build-tsan -j $(JOBS) --target nodemeter test_api test_agent test_kube
	@cd build-tsan && $(SANITIZER_ENV) ctest --output-on-failure --timeout 900 -R '$(TSAN_TESTS)'

bench:
	@scripts/deps.sh bench
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) --target all nodemeter_microbench
	@bench/run.sh $(BUILD)

format:
	@git ls-files '*.cpp' '*.h' | xargs clang-format -i

clean:
	rm -rf $(BUILD)
