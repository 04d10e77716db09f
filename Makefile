# Set-up on a fresh machine: `make demo` and `make test` each build .venv from nothing.
# torch is pinned here (a local CPU wheel on the development machines); pyproject.toml
# only declares the range users elsewhere can satisfy.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench browser clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_PIN)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/itertrain demo --out demo-run --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# Optional, needs root: the headless browser the report test uses (it skips, with the reason, without it).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

clean:
	rm -rf $(VENV) demo-run .pytest_cache .hypothesis
