# Quick start: `make demo` and `make test`. Each target does its own set-up (venv, Python deps, binaries).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv tools sandbox-up sandbox-down demo test bench clean-sandbox

venv: $(STAMP)

# Re-install only when pyproject.toml changed since the last install.
$(STAMP): pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
	  $(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      echo "installing python3-venv"; rm -rf $(VENV); \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && \
	      $(PYTHON) -m venv $(VENV); \
	    else echo "error: '$(PYTHON) -m venv' failed; install python3-venv (Python >= 3.11)"; exit 1; fi; }; \
	fi
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[sandbox,test]'
	@touch $@

tools: venv
	$(BIN)/k8s-runbooks sandbox tools

sandbox-up: venv
	$(BIN)/k8s-runbooks sandbox up

sandbox-down: venv
	$(BIN)/k8s-runbooks sandbox down

# SCENARIO: crash (pod-crash story), latency (incident with charts), drill (a scored pod-crash drill with rollback),
# slack (approval in the local Slack, refused presses, a page on timeout, resolved with the run)
SCENARIO ?= crash
demo: venv
	$(BIN)/k8s-runbooks demo --scenario $(SCENARIO)

# The integration fixtures start (and stop) their own sandbox on free ports; they need only the tools.
# pytest exit code 5 means "no tests collected": reported, not a failure of the make target.
test: venv tools
	@$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

# Benchmarks start their own sandbox pieces; figures land in bench/results/ (see BENCHMARKS.md).
BENCH_ARGS ?=
bench: venv tools
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean-sandbox: sandbox-down
	rm -rf .sandbox/pids .sandbox/logs .sandbox/prometheus .sandbox/alertmanager .sandbox/prefect .sandbox/pods
