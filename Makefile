# Two entry points: `make demo` trains a predictor on the shipped demo cache, `make test` runs the test suite.
# Both build .venv from the pinned requirements first (once; again when requirements.txt changes).
VENV := .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# torchsort's setup adds a CUDA extension whenever nvcc is on PATH and then fails on CPU-only machines:
# build it with every PATH directory that holds nvcc left out.
PATH_WITHOUT_NVCC := $(shell echo "$$PATH" | tr ':' '\n' | while read d; do [ -x "$$d/nvcc" ] || printf '%s:' "$$d"; done)

.PHONY: demo test venv
venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	PATH="$(PATH_WITHOUT_NVCC)" $(PY) -m pip install --no-build-isolation torchsort==0.1.10
	touch $@

demo: $(VENV)/.installed
	$(PY) train_predictor.py -families ofa_mbv3 -target acc -epochs_predictor 60 -plots

test: $(VENV)/.installed
	$(PY) -m pytest -q
