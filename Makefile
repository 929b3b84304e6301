# The two commands of the README: `make run` and `make test`.
BUILD   ?= build
JOBS    ?= $(shell nproc)
MAKEFLAGS += --no-print-directory
LISTEN  ?= 127.0.0.1:10261
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNODEMETER_WERROR=ON

.PHONY: all deps test-deps build run test bench format clean

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

bench:
	@scripts/deps.sh bench
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) --target all nodemeter_microbench
	@bench/run.sh $(BUILD)

format:
	@git ls-files '*.cpp' '*.h' | xargs clang-format -i

clean:
	rm -rf $(BUILD)
