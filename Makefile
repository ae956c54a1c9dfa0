# Developer entry points. `make venv` builds .venv from nothing but this repo; re-running it
# when nothing changed is a no-op (stamp files below record what has been done).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
BUILD := build

.PHONY: venv test test-fast lint demo clean
venv: $(VENV)/.stamp-msgs

$(VENV)/.stamp-tools:
	@bash scripts/check_tools.sh $(PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade 'pip>=24' 'setuptools>=77.0.3,<80' wheel
	touch $@

$(VENV)/.stamp-deps: $(VENV)/.stamp-tools requirements/venv.txt setup.py
	$(VPY) -m pip install --quiet -r requirements/venv.txt
	$(VPY) -m pip install --quiet --no-build-isolation -e '.[ros]'
	touch $@

# The stamp goes first, so that a failed build leaves a venv that `make test` refuses to use.
$(VENV)/.stamp-msgs: $(VENV)/.stamp-deps $(wildcard msg/*.msg) CMakeLists.txt package.xml scripts/build_interfaces.sh
	rm -f $@
	bash scripts/build_interfaces.sh $(VENV) $(BUILD)/interfaces
	touch $@

test: venv
	bash scripts/run_tests.sh

test-fast: venv
	bash scripts/run_tests.sh -m "not slow"

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Every shipped checkpoint in the real segmentation_node on a video of its own data (the synthetic video,
# or the CamVid clip shipped in vseg_core/data/demo_clips/); files in demo_output/.
# DEMO_ARGS passes options on, e.g. make demo DEMO_ARGS="--frames 60 --device cpu".
demo: venv
	$(VENV)/bin/vseg demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) $(BUILD)
