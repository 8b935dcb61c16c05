"""One typed config schema (issue 22, item 4): the settings dataclasses drive validation and the
`experiments.describe` listing; the routing function is the shape's only; old run configs keep meaning."""
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import moe
from accounting.shapes import ModelShape, split_optional
from experiments import describe, settings
from experiments.config import (CONF_DIR, MOVED_TO_SHAPE, ConfigError, F, compose, one_line, schema, to_plain,
                                upgrade_saved_config, validate)
from experiments.run_folder import changed_settings
from experiments.train import precheck
from moe.router import RouterConfig

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("clear_hydra")  # tests/conftest.py

GROUPS = {"": settings.RunSettings, "paths.": settings.PathSettings, "model.": settings.ModelSettings,
          "model.shape.": ModelShape, "model.router.": RouterConfig, "data.": settings.DataSettings,
          "optim.": settings.OptimSettings, "train.": settings.TrainSettings,
          "hardware.": settings.HardwareSettings, "logger.": settings.LoggerSettings}
"""Every dataclass of the run config and the prefix of its keys (stated here, not derived, so that a
class left out of the settings tree fails the tests)."""


def _leaves(cls, prefix):
    hints = settings.field_types(cls)
    return [prefix + f.name for f in dataclasses.fields(cls)
            if not dataclasses.is_dataclass(split_optional(hints[f.name])[0])]


def test_describe_cli_lists_every_field_with_type_default_and_meaning():
    p = subprocess.run([sys.executable, "-m", "experiments.describe"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = {ln.split()[0].lstrip("+"): ln for ln in p.stdout.splitlines()[1:] if not ln.startswith("#")}
    expected = [k for prefix, cls in GROUPS.items() for k in _leaves(cls, prefix)]
    assert len(expected) > 90 and sorted(lines) == sorted(expected)
    assert lines["model.router.jitter_eps"].split()[1:4] == ["float", "0.0", "training-time"]
    assert lines["train.device"].split()[1:3] == ["auto|cpu|cuda", "auto"]
    # a shape field the model file leaves at its default is listed with +, the form that sets it
    assert "\n+model.shape.router_groups " in p.stdout and "\nmodel.shape.top_k " in p.stdout


def test_every_field_has_help_and_a_type():
    rows = [r for r in describe.walk(settings.RunSettings, None) if isinstance(r, describe.Row)]
    assert [r.key for r in rows if not r.help or len(r.help) < 5] == []
    assert {r.key: r.type for r in rows}["data.val_works"] == "list[str]|null"


def test_describe_follows_the_overrides_and_refuses_bad_ones():
    rows = {r.key: r for r in describe.walk(settings.RunSettings, describe.composed(["model=deepseek"]))
            if isinstance(r, describe.Row)}
    assert rows["model.shape.router_scoring"].default == "sigmoid" and rows["model.shape.router_scoring"].in_config
    assert rows["model.router.balancing"].default == "loss_free"
    p = subprocess.run([sys.executable, "-m", "experiments.describe", "model.router.gating=sigmoid"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "config error: unknown config key 'model.router.gating' (prefix it with + to add a new key)"]


def test_router_jitter_eps_composes_validates_and_reaches_the_model():
    spec = validate(compose(["model.router.jitter_eps=0.1"]), cuda_available=False)
    assert spec.cfg["model"]["router"]["jitter_eps"] == 0.1
    assert spec.settings.model.router == RouterConfig(balancing="aux_loss", z_loss_coef=0.001, jitter_eps=0.1)
    model = moe.build_model(spec.shape, router=spec.cfg["model"]["router"])
    assert {m.config.jitter_eps for m in model.modules() if isinstance(m, moe.Router)} == {0.1}
    assert precheck(["model.router.jitter_eps=0.1"]) == 1


def test_schema_is_the_dataclasses():
    s = schema()
    assert list(s["model"]["router"]) == [f.name for f in dataclasses.fields(RouterConfig)]
    assert list(s["train"]) == [f.name for f in dataclasses.fields(settings.TrainSettings)]
    assert s["model"]["router"]["capacity_factor"] == F((int, float), nullable=True, positive=True)
    assert s["train"]["device"] == F((str,), choices=("auto", "cpu", "cuda"))
    assert s["optim"]["warmup_steps"] == F((int,), min=0)
    # and the typed settings come back from validate
    spec = validate(compose(["optim.lr=0.01", "train.threads=1"]))
    assert spec.settings.optim.lr == 0.01 and spec.settings.train.threads == 1
    assert spec.settings.model.shape is spec.shape


@pytest.mark.parametrize("overrides,line", [
    (["model.router.capacity_factor=0"], "model.router.capacity_factor=0 must be > 0"),
    (["model.router.jitter_eps=abc"], "model.router.jitter_eps='abc' must be a number"),
    (["model.router.balancing=sinkhorn"], "model.router.balancing='sinkhorn' must be one of none, aux_loss, "
                                          "loss_free"),
    (["+model.router.route_scale=2.5"], "unknown config key 'model.router.route_scale' (known under "
                                        "model.router: aux_loss_coef, balancing, bias_update_rate, "
                                        "capacity_factor, jitter_eps, z_loss_coef); the routing function is "
                                        "the shape's: model.shape.router_scale"),
    (["train.threads=0"], "train.threads=0 must be > 0"),
])
def test_derived_checks_keep_the_one_line_messages(overrides, line):
    with pytest.raises(ConfigError) as e:
        validate(compose(overrides), cuda_available=False)
    assert one_line(e.value) == "config error: " + line


@pytest.mark.parametrize("path,cls", [("train/default.yaml", settings.TrainSettings),
                                      ("optim/adamw.yaml", settings.OptimSettings),
                                      ("hardware/auto.yaml", settings.HardwareSettings),
                                      ("data/shakespeare.yaml", settings.DataSettings)])
def test_group_defaults_equal_the_dataclass_defaults(path, cls):
    assert yaml.safe_load((CONF_DIR / path).read_text()) == dataclasses.asdict(cls())


def test_model_and_root_defaults_equal_the_dataclass_defaults():
    dense = yaml.safe_load((CONF_DIR / "model" / "dense.yaml").read_text())
    assert dense["router"] == dataclasses.asdict(RouterConfig())
    assert (dense["backend"], dense["mtp_loss_weight"]) == ("loop", 0.3)
    root = yaml.safe_load((CONF_DIR / "config.yaml").read_text())
    defaults = {f.name: describe._dataclass_default(f) for f in dataclasses.fields(settings.RunSettings)}
    assert {k: root[k] for k in ("name", "seed", "resume", "overwrite")} == \
        {k: defaults[k] for k in ("name", "seed", "resume", "overwrite")}
    assert root["paths"] == dataclasses.asdict(settings.PathSettings())


def test_the_routing_function_is_set_in_the_shape_only():
    assert {f.name for f in dataclasses.fields(RouterConfig)}.isdisjoint(MOVED_TO_SHAPE)
    assert MOVED_TO_SHAPE == moe.router.MOVED_TO_SHAPE
    assert set(MOVED_TO_SHAPE.values()) <= {f.name for f in dataclasses.fields(ModelShape)}
    for path in (CONF_DIR / "model").glob("*.yaml"):
        assert set(yaml.safe_load(path.read_text()).get("router") or {}).isdisjoint(MOVED_TO_SHAPE), path
    spec = validate(compose(["+model.shape.router_scoring=sigmoid", "+model.shape.router_scale=2.5"]))
    assert (spec.shape.router_scoring, spec.shape.router_scale) == ("sigmoid", 2.5)


DEMO = REPO / "reports" / "data" / "runs" / "demo"
DEMO_OVERRIDES = {  # the Makefile's demo commands
    "dense": ["model=dense"], "moe": ["model=moe"], "deepseek": ["model=deepseek"],
    "deepseek-mla": ["model=deepseek_mla"],
    "moe-nobalance": ["model=moe", "model.name=moe-nobalance", "model.router.balancing=none",
                      "model.router.z_loss_coef=0"],
}


@pytest.mark.parametrize("family", sorted(DEMO_OVERRIDES))
def test_committed_demo_runs_mean_the_same_under_todays_keys(family):
    """The committed demo runs (saved with gating/normalize_topk/route_scale under model.router) restated
    the shape's routing function: upgraded to today's keys their shape is unchanged and a resume with
    today's config would find no changed setting."""
    saved = yaml.safe_load((DEMO / family / "tiny-seed0" / "config.yaml").read_text())
    assert set(saved["model"]["router"]) & set(MOVED_TO_SHAPE)
    upgraded = upgrade_saved_config(saved)
    assert upgraded["model"]["shape"] == saved["model"]["shape"]
    assert "gating" in saved["model"]["router"]  # the input is left alone
    now = to_plain(compose(["experiment=demo", *DEMO_OVERRIDES[family]]))
    now.pop("hydra", None)
    assert changed_settings(upgraded, now) == []
    assert changed_settings(saved, now) != []  # without the upgrade the old keys would refuse the resume


def test_upgrade_moves_an_overriding_legacy_value_onto_the_shape():
    saved = {"model": {"shape": {"d_model": 8}, "router": {"gating": "sigmoid", "normalize_topk": True,
                                                           "route_scale": 2.5, "balancing": "none"}}}
    up = upgrade_saved_config(saved)
    assert up["model"]["shape"] == {"d_model": 8, "router_scoring": "sigmoid", "router_scale": 2.5}
    assert up["model"]["router"] == {"balancing": "none", "jitter_eps": 0.0}


def test_docstring_help_reads_google_style_attributes():
    class Doc:
        """Title.

        Attributes:
            a, b: shared
                meaning.
            c: own.
        Returns: nothing
        """

    assert settings.docstring_help(Doc) == {"a": "shared meaning.", "b": "shared meaning.", "c": "own."}
