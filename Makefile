# Two commands do everything on a fresh machine: `make run` and `make test`.
# Both create the virtual environment and install the pinned requirements first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-all bench install clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

## The main job: copy the shipped real-photo sample to DS2GROCERIES if missing, train all three algorithms
## with the full default method (pseudo-label round included), W&B offline.
run: $(STAMP)
	$(PY) src/train_with_wandb.py

## The test suite (fast: slow end-to-end tests are excluded; `make test-all` runs them too).
test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

bench: $(STAMP)
	$(PY) benchmarks/bench.py

clean:
	rm -rf DS2GROCERIES wandb .mlops models/*.pkl models/*.skops models/*.pth models/*.json models/*.png models/*.sha256
	rm -rf models/.grocery-outputs.json .models.staging-*
