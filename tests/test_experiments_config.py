"""conf/ composition (Hydra compose API) and the one-line validation errors of experiments.config."""
import subprocess
import sys
from pathlib import Path

import pytest

from accounting.params import count_parameters
from experiments.config import ConfigError, compose, one_line, validate
from experiments.train import precheck

REPO = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("clear_hydra")  # tests/conftest.py


@pytest.mark.parametrize("overrides", [[], ["model=dense"], ["model=moe"], ["model=deepseek"],
                                       ["size=small"], ["size=medium", "model=deepseek"],
                                       ["experiment=demo"], ["experiment=equal_active"],
                                       ["experiment=equal_flops"], ["data=bin", "data.path=/x.bin"]])
def test_compose_and_validate(overrides):
    spec = validate(compose(overrides), cuda_available=False)
    assert spec.shape.vocab_size == spec.cfg["data"]["vocab_size"]


def test_size_overrides_model_dims_and_equal_active():
    dense = validate(compose(["model=dense", "size=small"])).shape
    moe = validate(compose(["model=moe", "size=small"])).shape
    assert (dense.d_model, dense.n_layers, moe.d_model, moe.seq_len) == (256, 4, 256, 256)
    # equal active parameters up to the d x E router per layer
    diff = count_parameters(moe).active - count_parameters(dense).active
    assert diff == moe.n_layers * moe.n_experts * moe.d_model
    assert count_parameters(moe).total > 3 * count_parameters(dense).total // 2


def test_deepseek_router_settings():
    spec = validate(compose(["model=deepseek"]))
    cfg = spec.cfg
    r = cfg["model"]["router"]
    assert (spec.shape.router_scoring, r["balancing"]) == ("sigmoid", "loss_free")
    assert cfg["model"]["shape"]["n_shared_experts"] == 1


def test_bytes_tokenizer_sets_vocab_256():
    assert validate(compose(["data.tokenizer=bytes"])).shape.vocab_size == 256


@pytest.mark.parametrize("overrides,needle", [
    (["+train.foo=1"], "train.foo"),
    (["train.batch_size=abc"], "train.batch_size"),
    (["train.batch_size=-3"], "train.batch_size"),
    (["model.shape.d_model=-64"], "d_model"),
    (["model.shape.top_k=9"], "top_k=9 exceeds n_experts=8"),
    (["model.shape.n_heads=5"], "not divisible by n_heads=5"),
    (["model.router.balancing=relu"], "model.router.balancing='relu' must be one of none, aux_loss, loss_free"),
    (["+model.router.gating=sigmoid"], "unknown config key 'model.router.gating'"),
    (["model.router.jitter_eps=-0.1"], "model.router.jitter_eps=-0.1 must be >= 0"),
    (["+model.shape.n_expert=4"], "n_expert"),
    (["data=text"], "data.path"),
    (["optim.betas=[0.9]"], "optim.betas"),
    (["model.backend=megablocks"], "megablocks"),
    (["model.mtp_loss_weight=-0.1"], "model.mtp_loss_weight=-0.1 must be >= 0"),
    (["model.mtp_loss_weight=abc"], "model.mtp_loss_weight='abc' must be a number"),
    (["model.mtp_loss_weight=true"], "model.mtp_loss_weight=True must be a number"),
    (["model=dense", "model.shape.mtp_modules=1"], "model.shape.mtp_modules=1 needs an MoE model"),
    (["model.shape.mtp_modules=-1"], "mtp_modules"),
])
def test_validation_errors_are_one_line(overrides, needle):
    with pytest.raises(ConfigError) as e:
        validate(compose(overrides), cuda_available=False)
    line = one_line(e.value)
    assert needle in line and "\n" not in line


def test_precheck_expands_sweeps_and_experiment_params():
    assert precheck(["-m", "model=dense,moe", "experiment=demo"]) == 2
    assert precheck(["-m", "experiment=equal_flops"]) == 3
    with pytest.raises(ConfigError, match="unknown config key 'train.foo'"):
        precheck(["train.foo=1"])
    with pytest.raises(ConfigError, match=r"job: model=dense"):
        precheck(["-m", "model=moe,dense", "model.shape.top_k=2"])
    with pytest.raises(ConfigError, match="model=nope: no such option; choose one of deepseek, deepseek_mla, dense, moe"):
        precheck(["-m", "model=dense,nope"])


def test_mtp_keys_reach_the_run_spec():
    spec = validate(compose(["model=deepseek", "model.shape.mtp_modules=1", "model.mtp_loss_weight=0.1"]))
    assert spec.shape.mtp_modules == 1 and spec.cfg["model"]["mtp_loss_weight"] == 0.1
    default = validate(compose([]))
    assert default.shape.mtp_modules == 0 and default.cfg["model"]["mtp_loss_weight"] == 0.3


def test_cli_bad_mtp_loss_weight_exits_2_with_one_line():
    p = subprocess.run([sys.executable, "-m", "experiments.train", "model.mtp_loss_weight=-1"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["config error: model.mtp_loss_weight=-1 must be >= 0"]


def test_cli_config_error_exits_with_one_line():
    p = subprocess.run([sys.executable, "-m", "experiments.train", "model.shape.top_k=99"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["config error: model.shape: top_k=99 exceeds n_experts=8"]
