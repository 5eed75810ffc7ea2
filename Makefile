# medseg-course: one virtual environment (.venv) for the book, the tests and the benchmarks.
#   make book       set up .venv, execute every chapter, build the HTML book into _build/html
#   make test       set up .venv, run the unit tests and every notebook under pytest --nbval,
#                   then build the HTML book and check it in headless Chromium
#   make browser-deps  install Debian's chromium, chromium-driver and a Chinese font (browser test)
#   make notebooks  re-execute every notebook in place (the committed outputs are a CPU run)
#   make cpu-tags   tag the cells whose outputs change under other arithmetic (depends-on-cpu: not compared)
#   make book-ci    build the HTML book from the committed outputs (no execution), as CI does
#   make test-robust  run chapters 5, 6, 8, 10, 13 and 14 (ROBUST_NOTEBOOKS) under nbval with arithmetic that
#                   rounds differently: oneDNN off, one thread (and AVX2 caps on an AVX-512 CPU)
#   make experiments  run the experiments of chapters 5, 6, 8, 10, 13 and 14 over many seeds (experiments/results/)
#   make bench      run the benchmarks (JSON to benchmarks/results/, about an hour), then print a table
#   make lab        open the course in JupyterLab with the course's environment
#   make clean      remove _build (keeps .venv)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard book/*.ipynb))
# Every output is compared except those of cells tagged depends-on-cpu (conftest.py), which run
# and assert uncompared. `make test NBVAL=--nbval-lax` never compares them.
NBVAL ?= --nbval
SPHINX_STRICT := -W -n --keep-going

export TF_CPP_MIN_LOG_LEVEL := 3
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help venv book book-ci test test-robust test-browser browser-deps notebooks cpu-tags experiments bench lab clean

help:
	@sed -n 's/^#   //p' Makefile

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . --builder html $(SPHINX_STRICT)
	@echo "Open _build/html/index.html"

book-ci: $(STAMP)
	mkdir -p _build
	sed 's/^\( *execute_notebooks:\).*/\1 "off"/' _config.yml > _build/_config_ci.yml
	$(BIN)/jupyter-book build . --config _build/_config_ci.yml --builder html $(SPHINX_STRICT)

test: $(STAMP) browser-deps
	$(BIN)/python -m pytest tests book --ignore=tests/browser $(NBVAL) --nbval-current-env \
		--nbval-cell-timeout=600 --nbval-sanitize-with tests/nbval_sanitize.cfg
	$(MAKE) book-ci
	$(MAKE) test-browser

# Every assert must hold under other rounding, not only the committed run's: each setting below
# trains other models from the same seeds. Outputs are never compared here (--nbval-lax).
ROBUST_NOTEBOOKS ?= book/05_loss_functions.ipynb book/06_environment_and_data.ipynb book/08_model_and_training.ipynb \
	book/10_case_study_brain_mri.ipynb book/13_challenges_and_future.ipynb book/14_faq.ipynb
ROBUST_SETTINGS := TF_ENABLE_ONEDNN_OPTS=0 MEDSEG_THREADS=1 \
	$(shell grep -q avx512f /proc/cpuinfo 2>/dev/null && echo ONEDNN_MAX_CPU_ISA=AVX2)
test-robust: $(STAMP)
	@for setting in $(ROBUST_SETTINGS); do \
		echo "== $$setting"; \
		env $$setting $(BIN)/python -m pytest $(ROBUST_NOTEBOOKS) --nbval-lax --nbval-current-env \
			--nbval-cell-timeout=600 -q -p no:cacheprovider || exit 1; \
	done

# The built book in headless Chromium: every chapter's figures load, no internal link is
# broken, search finds a chapter; screenshots go to _build/screenshots/.
test-browser: $(STAMP) browser-deps
	MEDSEG_REQUIRE_BROWSER=1 $(BIN)/python -m pytest tests/browser -q

# Debian's Chromium, its driver and a font for the glossary's Chinese terms, installed once
# (as root, or through sudo).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser-deps:
	@missing=""; \
	command -v chromium >/dev/null || command -v google-chrome >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	fc-list :lang=zh 2>/dev/null | grep -q . || missing="$$missing fonts-wqy-zenhei"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	else echo "the browser test needs:$$missing (Debian's package names): install them, or Chrome and chromedriver"; exit 1; fi

notebooks: $(STAMP)
	$(BIN)/jupyter-execute --inplace --timeout=600 $(NOTEBOOKS)

# Cells whose printed output changes when the arithmetic rounds differently (oneDNN off, one
# thread, NumPy's and OpenCV's wider SIMD kernels off) get the depends-on-cpu tag, so nbval runs
# them everywhere but compares their outputs only with --compare-outputs=all (conftest.py).
cpu-tags: $(STAMP)
	$(BIN)/python tests/cpu_tags.py --apply $(NOTEBOOKS)

# Chapters 5, 6, 8, 10, 13 and 14 read these records (their intervals); about an hour on a 2-core CPU.
experiments: $(STAMP)
	$(BIN)/python experiments/run.py losses --seeds 10 --save experiments/results/losses.json --replace
	$(BIN)/python experiments/run.py leakage --seeds 8 --save experiments/results/leakage.json --replace
	$(BIN)/python experiments/run.py models --seeds 8 --save experiments/results/models.json --replace
	$(BIN)/python experiments/run.py scanner --seeds 8 --save experiments/results/scanner.json --replace
	$(BIN)/python experiments/run.py brain_methods --seeds 8 --save experiments/results/brain_methods.json --replace
	$(BIN)/python experiments/run.py recipes --seeds 8 --save experiments/results/recipes.json --replace
	$(BIN)/python experiments/run.py lesion_lab --seeds 8 --save experiments/results/lesion_lab.json --replace
	$(BIN)/python experiments/claims.py --write

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py --save benchmarks/results/train_throughput.json
	$(BIN)/python benchmarks/mixed_precision.py --save benchmarks/results/mixed_precision.json
	$(BIN)/python benchmarks/inference.py --save benchmarks/results/inference.json
	$(BIN)/python benchmarks/time_to_dice.py --save benchmarks/results/time_to_dice.json
	$(BIN)/python benchmarks/bn_momentum.py --save benchmarks/results/bn_momentum.json
	$(BIN)/python benchmarks/recipes.py --save benchmarks/results/recipes.json
	$(BIN)/python benchmarks/tissue_width.py --save benchmarks/results/tissue_width.json
	$(BIN)/python benchmarks/notebook_times.py --save benchmarks/results/notebook_times.json
	$(BIN)/python benchmarks/table.py

lab: $(STAMP)
	test -x $(BIN)/jupyter-lab || $(BIN)/python -m pip install --quiet "jupyterlab==4.6.6"
	$(BIN)/jupyter-lab book

clean:
	rm -rf _build
