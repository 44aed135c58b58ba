# Two entry points: `make demo` (the main job on built-in data) and `make test`.
# Both create .venv at the repository root when missing and install the project into it.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: demo test lint bench accuracy clean-venv

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

# every recipe x W4A6 / W4A4 x seeds 0-2 on the reporting images, both built-in models
# (about an hour on 2 cores; resumes where it stopped): runs/accuracy/accuracy.md
accuracy: $(STAMP)
	$(PY) -m qmamba.bench accuracy --out runs/accuracy --settings W4A6 W4A4 --seeds 0 1 2

bench: $(STAMP)
	$(PY) -m qmamba.bench scan
	$(PY) -m qmamba.bench forward --model vim_tiny

clean-venv:
	rm -rf .venv
