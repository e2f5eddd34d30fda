# tingji — every target is idempotent and quick when nothing changed.
#   make run     set everything up and start the appliance on http://127.0.0.1:8000
#   make test    set everything up and run the test suite
#   make test-fast  the tests that need no model, server or large file (under a minute)
SHELL := /bin/bash
.DEFAULT_GOAL := run

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
# Debian packages: PortAudio for the microphone; espeak-ng speaks test sentences; the
# browser tests drive Debian's Chromium (with a CJK font for the screenshots).
DEB_RUN  := libportaudio2
# Real speech of different people for the speaker tests: voice prompts (Allison, en-US;
# June, fr-CA) and a LibriVox reading, as the Debian packages ship them; and real music.
DEB_TEST := espeak-ng chromium chromium-driver fonts-wqy-microhei \
            asterisk-core-sounds-en-g722 asterisk-core-sounds-fr-g722 pocketsphinx-testdata \
            asterisk-moh-opsound-g722
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# llama-cpp-python has no binary wheel here: it is compiled once (~4 min) into a wheelhouse
# outside the tree, with portable CPU flags so the binary runs on any CPU of the architecture.
LLAMA_VERSION := 0.3.36
WHEELHOUSE ?= $(HOME)/.cache/tingji/wheels
ARCH := $(shell uname -m)
ifeq ($(ARCH),x86_64)
  LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
else
  # ARM boards differ: the extensions the kernel lists (Pi 5 and RK3588: dotprod, fp16; a
  # Pi 4 neither) decide the architecture the library is built for.
  ARM_FEATURES := $(shell grep -m1 '^Features' /proc/cpuinfo 2>/dev/null)
  LLAMA_ARM_ARCH := $(if $(findstring asimddp,$(ARM_FEATURES)),armv8.2-a+dotprod$(if \
    $(findstring asimdhp,$(ARM_FEATURES)),+fp16)$(if $(findstring i8mm,$(ARM_FEATURES)),+i8mm),armv8-a)
  LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=$(LLAMA_ARM_ARCH)
endif
LLAMA_WHEEL = $(firstword $(wildcard $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl))

.PHONY: install deps catalogues messages models test-models run worker test test-fast bench screenshots \
        lint clean distclean arm64-check \
        keys bundle bundle-model flash rollback status start

install: deps catalogues models

deps: $(VENV)/.deps-installed

# The pages' languages (web/i18n.py): .po sources in the tree, .mo compiled here.
CATALOGUE_SOURCES := $(wildcard web/translations/*/LC_MESSAGES/messages.po)
catalogues: web/translations/.compiled

web/translations/.compiled: $(CATALOGUE_SOURCES) web/i18n.py $(VENV)/.deps-installed
	@$(PY) -m web.i18n compile
	@touch $@

# After changing a page's text: extract every string and merge it into the catalogues
# (then translate what is new in zh_CN; tests/test_i18n.py fails until it is).
messages: deps
	$(VENV)/bin/pybabel --quiet extract -F babel.cfg -k N_ --no-location --sort-output \
	  --omit-header -o $(VENV)/messages.pot .
	$(VENV)/bin/pybabel --quiet update -i $(VENV)/messages.pot -d web/translations \
	  --no-fuzzy-matching --ignore-obsolete --width 100
	@sed -i '/^"POT-Creation-Date: /d' $(CATALOGUE_SOURCES)  # no churn from the clock

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

# axe-core checks the pages' accessibility in the browser tests: from npm, into a git-ignored
# folder (Debian's npm only where no npm is installed: NodeSource's nodejs carries its own).
AXE_VERSION := 4.14.1
AXE := .cache/axe/node_modules/axe-core/axe.min.js

$(AXE):
	@command -v npm >/dev/null || bash scripts/ensure-deb.sh npm
	@npm install --silent --no-audit --no-fund --prefix .cache/axe axe-core@$(AXE_VERSION) \
	  </dev/null || echo "tingji: axe-core not installed: the accessibility checks skip" >&2

# One test at a time: in two processes (~16 min against ~18 on 2 cores; 18 against 22 on a
# slower pair, with a fifth more CPU time spent) the final pass during a recording, at idle
# priority, got no CPU beside the other process's tests.
test: install test-models $(AXE)
	@bash scripts/ensure-deb.sh $(DEB_TEST)
	@$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	  if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	  exit $$status

# Pure logic only: no model, no server, no subprocess, no large file; in two processes.
test-fast: deps catalogues
	@$(PY) -m pytest -q -n 2 -m "not slow" $(PYTEST_ARGS)

SPEECH_DIR ?= ../shared/speech

# The appliance on aarch64 under qemu (docs/arm64.md): not part of `make test` (up to an hour
# from a cold cache, ~15 minutes with it); needs root for debootstrap and chroot.
arm64-check:
	@SPEECH_DIR=$(SPEECH_DIR) bash scripts/arm64-check.sh

bench: install
	$(PY) bench/asr.py
	$(PY) bench/live.py
	$(PY) bench/ready.py
	$(PY) bench/summary.py
	$(PY) bench/web.py
	$(PY) bench/stereo.py
	$(PY) bench/faithfulness.py
	$(PY) bench/diarization.py
	$(PY) bench/voiceprints.py
	$(PY) bench/security.py
	$(PY) bench/encryption.py
	$(PY) bench/longform.py
	@if [ -f $(SPEECH_DIR)/manifest.tsv ]; then \
	  $(PY) -m device.eval $(SPEECH_DIR) --profiles raw,auto,dialect --out bench/results/eval.json; \
	else echo "bench: no $(SPEECH_DIR)/manifest.tsv, accuracy harness skipped"; fi
	@if [ -f $(SPEECH_DIR)-dev/manifest.tsv ]; then \
	  $(PY) -m device.eval $(SPEECH_DIR)-dev --profiles raw,auto,dialect \
	    --out bench/results/eval-dev.json; \
	else echo "bench: no $(SPEECH_DIR)-dev/manifest.tsv, dialect dev set skipped"; fi

# Screenshots of the main pages (README), taken by the browser test.
screenshots: install
	@bash scripts/ensure-deb.sh $(DEB_TEST)
	TINGJI_SCREENSHOTS=bench/screenshots $(PY) -m pytest -q tests/test_browser.py

# -- signed updates (admins) ----------------------------------------------------------------
# The signing key stays off the box and out of the repository; boxes trust the public keys in
# updates/keys/ of their active firmware.  TARGET is the box's install root (A/B slots).
KEY    ?= $(HOME)/.config/tingji/signing.key
TARGET ?= /opt/tingji
# On a box (make run from TARGET/current/code), the active slot's environment runs the
# updater; in a checkout, the project's venv.
BOX_LOCK := $(wildcard $(TARGET)/current/requirements.lock)
UPDATE_PY = $(if $(BOX_LOCK),PYTHONPATH=$(TARGET)/current/code $(TARGET)/envs/$(shell \
	sha256sum $(BOX_LOCK) | cut -c1-16)/bin/python,$(PY))
UPDATE_DEPS = $(if $(BOX_LOCK),,deps)

keys: deps
	$(PY) -m updates keys --private $(KEY)

# make bundle VERSION=1.2.0 [NO_WHEELS=1]   → bundles/tingji-1.2.0.tar
bundle: deps
	@test -n "$(VERSION)" || { echo "usage: make bundle VERSION=x.y.z" >&2; exit 2; }
	$(PY) -m updates bundle $(VERSION) bundles/tingji-$(VERSION).tar --key $(KEY) \
	  --find-links $(WHEELHOUSE) $(if $(NO_WHEELS),--no-wheels)

# make bundle-model MODEL_TAR=x.tar VERSION=1.0.0   (MODEL_TAR from `python -m models make-bundle`)
bundle-model: deps
	@test -n "$(MODEL_TAR)" -a -n "$(VERSION)" || { echo "usage: make bundle-model MODEL_TAR=… VERSION=…" >&2; exit 2; }
	$(PY) -m updates bundle-model $(MODEL_TAR) $(VERSION) bundles/$(notdir $(basename $(MODEL_TAR)))-$(VERSION).tar --key $(KEY)

# make flash BUNDLE=path [TARGET=dir] [ALLOW_DOWNGRADE=1]
flash: $(UPDATE_DEPS)
	@test -n "$(BUNDLE)" || { echo "usage: make flash BUNDLE=path [TARGET=dir]" >&2; exit 2; }
	$(UPDATE_PY) -m updates flash $(BUNDLE) --target $(TARGET) $(if $(ALLOW_DOWNGRADE),--allow-downgrade)

rollback: $(UPDATE_DEPS)
	$(UPDATE_PY) -m updates rollback --target $(TARGET)

status: $(UPDATE_DEPS)
	$(UPDATE_PY) -m updates status --target $(TARGET)

# Start an installed box: finish or undo an interrupted update, then the active slot.
start: $(UPDATE_DEPS)
	$(UPDATE_PY) -m updates run --target $(TARGET)

lint: deps
	$(PY) -m ruff check device models web updates tests bench

# Removes what the build made; never the recordings (data/) or the model store.
clean:
	rm -rf $(VENV) bench/work .pytest_cache .ruff_cache .hypothesis *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Also removes the installed models (they are re-assembled by `make models`).
distclean: clean
	rm -rf models/weights
