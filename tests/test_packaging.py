"""The wheel (issue 22, item 5): ``pip wheel .`` holds every module and all of conf/ (as the package data
experiments/conf/), and the wheel installed into a fresh venv outside the checkout trains two steps and prints
Table 3 from another folder.

The fresh venv is created without pip and without network: the wheel goes in with ``pip --python VENV install
--no-deps --no-index``; its dependencies (torch, hydra, ...) are this environment's, reached through a .pth file
that appends this environment's site-packages to the venv's sys.path (after the venv's own, so the installed
wheel's packages, not the checkout's, are imported; the test asserts that).
"""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("accounting", "dense", "moe", "experiments", "reports")
pytestmark = pytest.mark.slow  # ~30 s: a wheel build, a venv, a 2-step training


def _quiet_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", OMP_NUM_THREADS="1")
    return env


def _run(cmd, cwd, timeout=300):
    p = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_quiet_env(), capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def _source_copy(dst: Path) -> Path:
    """What a wheel is built from (pyproject, README, the packages, conf/), without build outputs, so that
    building never writes into the checkout."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dst / name)
    for name in (*PACKAGES, "conf"):
        shutil.copytree(ROOT / name, dst / name, ignore=ignore)
    return dst


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = _source_copy(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("wheels")
    cmd = [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-w", out, "-q"]
    import setuptools  # the license = "MIT" string needs setuptools >= 77; older: build in isolation
    if int(setuptools.__version__.split(".")[0]) >= 77:
        cmd.append("--no-build-isolation")
    _run(cmd, cwd=src)
    (whl,) = out.glob("moe_economics-*.whl")
    return whl


def test_wheel_holds_every_module_and_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
               if "__pycache__" not in p.parts}
    assert modules and modules <= names, sorted(modules - names)
    confs = {"experiments/conf/" + p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml")}
    assert "experiments/conf/config.yaml" in confs and "experiments/conf/model/moe.yaml" in confs
    assert confs <= names, sorted(confs - names)
    shipped = {"accounting/configs/" + p.name for p in (ROOT / "accounting" / "configs").glob("*.json")}
    assert shipped and shipped <= names


@pytest.fixture(scope="module")
def venv_python(wheel, tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv)
    python = venv / "bin" / "python"
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=venv).stdout
    outer = [p for p in [*site.getsitepackages(), sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    (Path(purelib.strip()) / "_outer_site_packages.pth").write_text("\n".join(dict.fromkeys(outer)) + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel], cwd=venv)
    return python


def test_installed_wheel_trains_and_prices_from_another_folder(venv_python, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run([venv_python, "-c", "import accounting, experiments, moe; from experiments.config import CONF_DIR; "
                  "print(experiments.__file__); print(accounting.__file__); print(CONF_DIR)"], cwd=work).stdout.split()
    venv = venv_python.parent.parent
    for path in where:  # the wheel's copies, not the checkout's
        assert Path(path).is_relative_to(venv) and not Path(path).is_relative_to(ROOT), where
    assert Path(where[2]).name == "conf" and (Path(where[2]) / "model" / "moe.yaml").is_file()

    _run([venv_python, "-m", "experiments.train", "model=moe", "name=wheel", "train.max_steps=2", "train.log_every=1",
          "train.eval_every=2", "train.eval_batches=1", "train.batch_size=2", "model.shape.seq_len=32",
          "data.tokenizer=bytes", "train.threads=1", "train.progress=none", "optim.warmup_steps=1",
          "hardware.peak_flops_per_s=1e11", "paths.runs=runs", f"paths.cache={tmp_path / 'cache'}"], cwd=work)
    (run_dir,) = (work / "runs" / "wheel").glob("*/*")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 2, summary
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert [r["step"] for r in lines if "train_loss" in r] == [1, 2], lines

    table3 = _run([venv_python, "-m", "accounting", "table3"], cwd=work).stdout
    assert table3.startswith("Press (2025) Table 3") and "FAIL" not in table3 and "6.71B" in table3
    params = json.loads(_run([venv_python, "-m", "accounting", "params", "--config",
                              Path(where[2]) / "model" / "moe.yaml", "--format", "json"], cwd=work).stdout)
    assert params["name"] == "moe" and params["shape"]["n_experts"] == 8
