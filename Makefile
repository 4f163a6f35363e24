# Two commands do all the set-up on a machine with Python 3.11 and pip:
#   make demo   build a layer, solve a batch, print a gradient and its FD check
#   make test   run the whole test suite
# Both create (or reuse) the virtual environment .venv and install what they need.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-test

.PHONY: demo test bench bench-solvers lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-core: $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet -e .
	touch $@

# The suite covers every front-end, so `make test` installs them all
# (torch==2.13.0 is pinned in setup.cfg: a local CPU wheel on our machines;
# tensorflow-cpu is about 1.6 GB and half a minute).
$(STAMP): $(VENV)/.installed-core
	$(PY) -m pip install --quiet -e ".[test,torch,tensorflow]"
	touch $@

demo: $(VENV)/.installed-core
	$(PY) examples/quickstart.py

test: $(STAMP)
	$(PY) -m pytest -q

# The performance suite compares with cvxpylayers 1.2.0 (the version of the
# README's tables), installed here only (it is never a dependency of conelayers).
bench: $(STAMP)
	$(PY) -m pip install --quiet cvxpylayers==1.2.0
	$(PY) benchmarks/bench.py
	$(PY) benchmarks/cluster.py

bench-solvers: $(STAMP)
	$(PY) benchmarks/choose_solver.py

lint: $(STAMP)
	$(PY) -m pip install --quiet ruff pyright
	$(VENV)/bin/ruff check conelayers tests examples benchmarks
	$(VENV)/bin/pyright conelayers

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
