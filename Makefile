# tinylab: `make run` (main job) and `make test` (the whole suite) set everything up themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lab clean

run: $(STAMP)  ## execute every notebook headless on the bundled sample (smoke preset)
	TINYLAB_PRESET=smoke $(BIN)/python -m tinylab.pipeline

test: $(STAMP)  ## unit tests + nbval on every notebook under the smoke preset
	$(BIN)/python -m pytest

lab: $(STAMP)  ## JupyterLab on notebooks/ with the real preset
	$(BIN)/jupyter lab notebooks/

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

clean:  ## remove the environment (artifacts under data/ are kept)
	rm -rf $(VENV)
