# Two commands do everything from a fresh clone:
#   make demo   - create .venv, install cpcaudio, run the whole pipeline (the main job)
#   make test   - create .venv, install cpcaudio with test extras, run the test suite
#
# torch: TORCH is what pip installs first. The default pins a release; GPU or CPU-only users can pass
# their own, e.g.  make test TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
# An existing torch in the venv is kept.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.cpcaudio-installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cpcaudio demo $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
