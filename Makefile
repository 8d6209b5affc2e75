# tinylab: `make run` (main job) and `make test` (the whole suite) set everything up themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-gpu lab notebooks e2e clean

run: $(STAMP)  ## execute every notebook headless on the bundled sample (smoke preset)
	TINYLAB_PRESET=smoke $(BIN)/python -m tinylab.pipeline

test: $(STAMP)  ## unit tests + nbval on every notebook under the smoke preset
	$(BIN)/python -m pytest

test-gpu: $(STAMP)  ## only the tests marked gpu (tests/gpu/), on a CUDA GPU
	$(BIN)/python -m pytest -m gpu

lab: $(STAMP)  ## JupyterLab on notebooks/ with the real preset
	$(BIN)/jupyter lab notebooks/

notebooks: $(STAMP)  ## re-execute notebooks/ in place, in order, under the smoke preset on the CPU (commit the outputs)
	home=$$(mktemp -d) && TINYLAB_PRESET=smoke TINYLAB_DEVICE=cpu TINYLAB_HOME=$$home \
	  $(BIN)/python -m tinylab.pipeline --in-place; status=$$?; rm -rf $$home; exit $$status

CHROMIUM ?= /usr/bin/chromium
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

e2e: $(STAMP)  ## real-browser test: JupyterLab in Chromium drives the widgets of notebooks 01 and 05
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium (apt-get)"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }
	@$(BIN)/python -c "import playwright" 2>/dev/null || $(BIN)/pip install -q 'playwright>=1.45'
	TINYLAB_E2E=1 TINYLAB_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest tests/e2e

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,hf]'
	touch $@

clean:  ## remove the environment (artifacts under data/ are kept)
	rm -rf $(VENV)
