# Two entry points: `make demo` (the main job on built-in data) and `make test`.
# Both create .venv at the repository root when missing and install the project into it.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: demo test lint bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m qmamba demo

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check src tests

bench: $(STAMP)
	$(PY) -m qmamba.bench scan
	$(PY) -m qmamba.bench forward --model vim_tiny

clean-venv:
	rm -rf .venv
