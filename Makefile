# tingji — every target is idempotent and quick when nothing changed.
#   make run     set everything up and start the appliance on http://127.0.0.1:8000
#   make test    set everything up and run the test suite
SHELL := /bin/bash
.DEFAULT_GOAL := run

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
# Debian packages: PortAudio for the microphone; espeak-ng speaks test sentences; the
# browser tests drive Debian's Chromium (with a CJK font for the screenshots).
DEB_RUN  := libportaudio2
DEB_TEST := espeak-ng chromium chromium-driver fonts-wqy-microhei
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# llama-cpp-python has no binary wheel here: it is compiled once (~4 min) into a wheelhouse
# outside the tree, with portable CPU flags so the binary runs on any CPU of the architecture.
LLAMA_VERSION := 0.3.36
WHEELHOUSE ?= $(HOME)/.cache/tingji/wheels
ARCH := $(shell uname -m)
ifeq ($(ARCH),x86_64)
  LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
else
  LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16
endif
LLAMA_WHEEL = $(firstword $(wildcard $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl))

.PHONY: install deps models test-models run worker test bench screenshots lint clean distclean

install: deps models

deps: $(VENV)/.deps-installed

$(VENV)/.deps-installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "tingji needs Python >= 3.11"'
	@bash scripts/ensure-deb.sh $(DEB_RUN)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if [ -z "$(LLAMA_WHEEL)" ]; then \
	  echo "building llama-cpp-python $(LLAMA_VERSION) once into $(WHEELHOUSE) (about 4 minutes)"; \
	  mkdir -p $(WHEELHOUSE) && CMAKE_ARGS="$(LLAMA_CMAKE)" $(PY) -m pip wheel --quiet --no-deps \
	    -w $(WHEELHOUSE) llama-cpp-python==$(LLAMA_VERSION); fi
	$(PY) -m pip install --quiet --find-links $(WHEELHOUSE) -e '.[dev,llm]'
	@touch $@

models: deps
	@$(PY) -m models install

# The small summariser the tests use (the default models come with `make models`).
test-models: models
	@$(PY) -m models install qwen2.5-coder-0.5b-instruct

run: install
	$(PY) -m device run

worker: install
	$(PY) -m device worker

test: install test-models
	@bash scripts/ensure-deb.sh $(DEB_TEST)
	@$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	  if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	  exit $$status

SPEECH_DIR ?= ../shared/speech

bench: install
	$(PY) bench/asr.py
	$(PY) bench/live.py
	$(PY) bench/summary.py
	$(PY) bench/web.py
	@if [ -f $(SPEECH_DIR)/manifest.tsv ]; then \
	  $(PY) -m device.eval $(SPEECH_DIR) --profiles raw,auto,dialect --out bench/results/eval.json; \
	else echo "bench: no $(SPEECH_DIR)/manifest.tsv, accuracy harness skipped"; fi

# Screenshots of the main pages (README), taken by the browser test.
screenshots: install
	@bash scripts/ensure-deb.sh $(DEB_TEST)
	TINGJI_SCREENSHOTS=bench/screenshots $(PY) -m pytest -q tests/test_browser.py

lint: deps
	$(PY) -m ruff check device models web tests bench

# Removes what the build made; never the recordings (data/) or the model store.
clean:
	rm -rf $(VENV) bench/work .pytest_cache .ruff_cache .hypothesis *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Also removes the installed models (they are re-assembled by `make models`).
distclean: clean
	rm -rf models/weights
