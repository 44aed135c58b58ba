# Two entry points: `make demo` (the main job on built-in data) and `make test`.
# Both create .venv at the repository root when missing and install the project into it.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: demo test lint bench accuracy accuracy-plus clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --no-cache-dir --upgrade --quiet pip
	$(PY) -m pip install --no-cache-dir --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m qmamba demo

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check src tests

# every recipe x W4A6 / W4A4 x seeds 0-2 on the reporting images, both built-in models
# (about an hour on 2 cores; resumes where it stopped): runs/accuracy/accuracy.md
# the recipes of benchmarks/results/accuracy/ (every recipe registered before qmamba_plus)
ACCURACY_RECIPES = minmax percentile qmamba qmamba_base qmamba_no_ltsq qmamba_no_tgq mambaquant ptq4vit \
	ptq4vm quamba qvlm repq_vit mambaquant+base ptq4vit+base ptq4vm+base quamba+base qvlm+base repq_vit+base
accuracy: $(STAMP)
	$(PY) -m qmamba.bench accuracy --out runs/accuracy --settings W4A6 W4A4 --seeds 0 1 2 --recipes $(ACCURACY_RECIPES)

# qmamba_plus (issue 16) against qmamba, its ablation rows at W4A4, and both at W8A8 / W4A8
# (58 runs, 24 min of run time, one core per run): runs/accuracy_plus/{w4a4,w8}/accuracy.md
accuracy-plus: $(STAMP)
	$(PY) -m qmamba.bench accuracy --out runs/accuracy_plus/w4a4 --settings W4A4 --seeds 0 1 2 \
		--recipes qmamba qmamba_plus qmamba_plus_no_rot qmamba_plus_no_tuning qmamba_plus_no_channel_scales
	$(PY) -m qmamba.bench accuracy --out runs/accuracy_plus/w8 --settings W8A8 W4A8 --seeds 0 1 2 \
		--recipes qmamba qmamba_plus

bench: $(STAMP)
	$(PY) -m qmamba.bench scan
	$(PY) -m qmamba.bench forward --model vim_tiny

clean-venv:
	rm -rf .venv
