# make book   : the main job: every notebook executed on the quick profile, HTML book built (_build/quick)
# make test   : the tests: unit + end-to-end (pytest), nbval over the published book, book build check
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PY := .venv/bin/python
PIP_QUIET := 2>&1 | { grep -v -E "is ignored: it is neither|^$$" || true; }
PROFILE ?= cpu-real
DATA ?=
DEVICE ?= cpu

.PHONY: setup book publish reproduce gpu-prep test unit nbval book-check clean

.venv/.installed: requirements.txt pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q -r requirements.txt $(PIP_QUIET)
	# APGD and Square of the stronger evaluation (dpaat_lib.robustness) and the tests' oracle; --no-deps because
	# it pins requests~=2.25, which breaks Sphinx
	.venv/bin/pip install -q --no-deps torchattacks==3.5.1 $(PIP_QUIET)
	.venv/bin/pip install -q --no-deps -e . $(PIP_QUIET)
	touch $@

setup: .venv/.installed

book: setup  ## main job: quick profile (synthetic data, CPU), computed end to end, HTML in _build/quick/_build/html
	$(PY) scripts/build_book.py --profile quick --out _build/quick --device $(DEVICE)

publish: setup  ## re-execute the published book/ from its committed results, HTML in _build/html (DATA=: as published)
	$(PY) scripts/build_book.py --profile $(PROFILE) --out . --device $(DEVICE) $(if $(DATA),--data "$(DATA)")

reproduce: setup  ## everything from a HAM10000 folder: make reproduce DATA=/path/to/ham10000 PROFILE=paper DEVICE=cuda
	@test -n "$(DATA)" || { echo "usage: make reproduce DATA=/path/to/HAM10000 [PROFILE=cpu-real|paper] [DEVICE=cuda]"; exit 2; }
	$(PY) scripts/build_book.py --profile $(PROFILE) --out . --data "$(DATA)" --device $(DEVICE)

# The packages a lent GPU lacks (it has torch, no internet): pure-Python wheels, as in requirements.txt.
GPU_WHEELS := grad-cam==1.5.7 ttach==0.0.3 torchattacks==3.5.1

gpu-prep: setup  ## what a lent GPU's call carries (README, "On a GPU"): make gpu-prep DATA=/path/to/HAM10000
	@test -n "$(DATA)" || { echo "usage: make gpu-prep DATA=/path/to/HAM10000"; exit 2; }
	.venv/bin/dpaat slim-copy --profile paper --data "$(DATA)" --out scratch/ham-gpu
	rm -rf .whl && .venv/bin/pip wheel -q --no-deps -w .whl $(GPU_WHEELS) $(PIP_QUIET)
	$(PY) scripts/travel_size.py --carry scratch/ham-gpu .whl $(wildcard scratch/compile-cache)

unit: setup
	$(PY) -m pytest tests

nbval: setup
	$(PY) -m pytest -p no:cacheprovider --nbval --nbval-current-env --nbval-sanitize-with nbval_sanitize.cfg book -q

book-check: setup
	.venv/bin/jupyter-book build . -W -n --keep-going
	$(PY) scripts/check_book.py .

test: unit nbval book-check

clean:
	rm -rf _build
