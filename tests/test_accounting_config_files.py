"""``python -m accounting`` options and ``--config`` specs (issue 22, item 6): --format before or after the
subcommand, options given twice, published counts matched on content, checkpoint and run folders, conf/model
files composed by Hydra, cost's default --seq-len."""
import json
import shutil
import sys
from pathlib import Path

import pytest

from accounting import cli
from accounting.config_files import architecture_key, published_counts, resolve_config
from accounting.hf_config import CONFIG_DIR, PUBLISHED_COUNTS, load_shipped, shipped_configs
from accounting.params import count_parameters

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "reports" / "data" / "runs" / "demo" / "moe" / "tiny-seed0"

# mistral-community/Mixtral-8x22B-v0.1 config.json (the fields that matter): 141B total, 39B active published
MIXTRAL_8X22B = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 6144,
                 "intermediate_size": 16384, "max_position_embeddings": 65536, "num_attention_heads": 48,
                 "num_experts_per_tok": 2, "num_hidden_layers": 56, "num_key_value_heads": 8, "num_local_experts": 8,
                 "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "tie_word_embeddings": False, "vocab_size": 32000}


def main(capsys, *argv):
    code = cli.main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def ok_json(capsys, *argv):
    code, out, err = main(capsys, *argv)
    assert code == 0 and err == "", err
    return json.loads(out)


def one_line_error(capsys, *argv, needle=""):
    code, out, err = main(capsys, *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("error: "), (code, out, err)
    assert needle in err, err
    return err


# ----- global options ------------------------------------------------------------------------------------
COMMANDS = [["table3"], ["deepseek"], ["params", "--config", "olmoe-1b-7b"],
            ["cost", "--config", "llama-3-8b", "--tokens", "1e12", "--seq-len", "2048"],
            ["serve", "--config", "mixtral-8x7b", "--gpu", "h100-sxm", "--gpus", "2", "--batch", "1", "8",
             "--context", "1024"],
            ["serving-check"]]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: a[0])
@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_format_before_the_subcommand_equals_after(capsys, argv, fmt):
    before = main(capsys, "--format", fmt, *argv)
    after = main(capsys, *argv, "--format", fmt)
    assert before == after and before[0] == 0
    if fmt == "json":
        json.loads(before[1])
    else:
        assert before[1] != main(capsys, *argv)[1]  # not the table


@pytest.mark.parametrize("argv", [["--format", "json", "table3", "--format", "csv"],
                                  ["--format", "json", "table3", "--format", "json"],
                                  ["table3", "--format", "json", "--format", "csv"],
                                  ["--format", "json", "--format", "csv", "table3"]])
def test_format_given_twice_is_refused(capsys, argv):
    one_line_error(capsys, *argv, needle="--format")


def test_config_given_twice_is_refused(capsys):
    err = one_line_error(capsys, "params", "--config", "mixtral-8x7b", "--config", "dbrx", needle="--config")
    assert "twice" in err and "mixtral-8x7b" in err and "dbrx" in err
    one_line_error(capsys, "cost", "--config", "dbrx", "--tokens", "1e12", "--config", "dbrx", needle="twice")


# ----- published counts: content, not file name -----------------------------------------------------------
def test_published_counts_match_the_content_not_the_file_name(capsys, tmp_path):
    big = tmp_path / "mixtral-8x7b.json"  # Mixtral-8x22B saved under 8x7B's name
    big.write_text(json.dumps(MIXTRAL_8X22B))
    d = ok_json(capsys, "params", "--config", big, "--format", "json")
    assert d["name"] == "mixtral-8x7b" and "published" not in d
    assert d["total_params"] == pytest.approx(141e9, rel=0.01)  # it is the 141B model
    assert "published:" not in main(capsys, "params", "--config", big)[1]
    small = tmp_path / "my-moe.json"  # Mixtral-8x7B under another name
    shutil.copy(CONFIG_DIR / "mixtral-8x7b.json", small)
    d = ok_json(capsys, "params", "--config", small, "--format", "json")
    assert d["published"]["total_params"] == 46.7e9 and d["name"] == "my-moe"
    # a longer context window or another RoPE base is the same model; other sizes are not
    cfg = json.loads((CONFIG_DIR / "mixtral-8x7b.json").read_text())
    for change, same in [({"max_position_embeddings": 4096, "rope_theta": 1e4}, True),
                         ({"num_local_experts": 16}, False), ({"num_hidden_layers": 31}, False),
                         ({"vocab_size": 32768}, False)]:
        small.write_text(json.dumps({**cfg, **change}))
        assert ("published" in ok_json(capsys, "params", "--config", small, "--format", "json")) is same, change


def test_every_shipped_config_matches_itself_only():
    keys = {name: architecture_key(load_shipped(name)) for name in shipped_configs()}
    assert len(set(keys.values())) == len(keys)
    for name in shipped_configs():
        assert published_counts(load_shipped(name, seq_len=1234))["name"] == name
        assert published_counts(load_shipped(name).replace(name="x"))["total"] == PUBLISHED_COUNTS[name]["total"]


# ----- folders and conf/model files ------------------------------------------------------------------------
def test_checkpoint_folder_reads_its_config_json(capsys, tmp_path):
    ckpt = tmp_path / "olmoe-checkpoint"
    ckpt.mkdir()
    shutil.copy(CONFIG_DIR / "olmoe-1b-7b.json", ckpt / "config.json")
    (ckpt / "model.safetensors").write_bytes(b"")  # weights are never read
    d = ok_json(capsys, "params", "--config", ckpt, "--format", "json")
    assert d["config"] == str(ckpt / "config.json") and d["name"] == "olmoe-checkpoint"
    assert d["total_params"] == count_parameters(load_shipped("olmoe-1b-7b")).total
    assert d["published"]["total_params"] == 6.9e9
    assert ok_json(capsys, "params", "--config", ckpt / "config.json", "--format", "json")["name"] == "olmoe-checkpoint"


def test_run_folder_reads_its_config_yaml(capsys):
    env = json.loads((RUN / "env.json").read_text())
    d = ok_json(capsys, "params", "--config", RUN, "--format", "json")
    assert d["config"] == str(RUN / "config.yaml") and d["name"] == "moe"
    assert d["total_params"] == env["parameters_total"] and d["active_params"] == env["parameters_active"]


def test_folder_without_a_config_is_one_line(capsys, tmp_path):
    one_line_error(capsys, "params", "--config", tmp_path, needle="neither config.json")


@pytest.mark.usefixtures("clear_hydra")
@pytest.mark.parametrize("model", sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml")))
def test_conf_model_file_is_composed_as_training_composes_it(capsys, model):
    from experiments.config import compose, validate
    spec = validate(compose([f"model={model}"]))
    trained = spec.shape.replace(name=spec.cfg["model"]["name"])  # training's shape leaves the name empty
    d = ok_json(capsys, "params", "--config", ROOT / "conf" / "model" / f"{model}.yaml", "--format", "json")
    assert d["shape"] == trained.to_dict()
    assert "Hydra compose: model=" + model in d["config"] and "size=tiny" in d["config"]
    d = ok_json(capsys, "params", "--config", ROOT / "conf" / "model" / f"{model}.yaml", "--seq-len", "256",
                "--format", "json")
    assert d["shape"] == {**trained.to_dict(), "seq_len": 256}


def test_conf_model_file_leaves_hydra_and_resolvers_as_found(clear_hydra):
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf
    before = {name: OmegaConf.has_resolver(name) for name in ("mul", "div", "vocab")}
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        outer = GlobalHydra.instance().hydra
        shape = resolve_config(ROOT / "conf" / "model" / "moe.yaml", seq_len=48).shape
        assert GlobalHydra.instance().hydra is outer
    assert shape.seq_len == 48 and shape.n_experts == 8
    assert {name: OmegaConf.has_resolver(name) for name in before} == before


def test_conf_model_file_without_hydra_is_one_line(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "hydra", None)  # import hydra -> ImportError
    one_line_error(capsys, "params", "--config", ROOT / "conf" / "model" / "moe.yaml", needle="needs hydra-core")


def test_unresolved_yaml_outside_conf_is_one_line(capsys, tmp_path):
    (tmp_path / "moe.yaml").write_text((ROOT / "conf" / "model" / "moe.yaml").read_text())
    one_line_error(capsys, "params", "--config", tmp_path / "moe.yaml", needle="interpolations")


# ----- cost --seq-len default ------------------------------------------------------------------------------
def test_cost_seq_len_defaults_to_the_shape(capsys):
    default = ok_json(capsys, "cost", "--config", "llama-3-8b", "--tokens", "1e12", "--format", "json")
    explicit = ok_json(capsys, "cost", "--config", "llama-3-8b", "--tokens", "1e12", "--seq-len", "8192",
                       "--format", "json")
    assert default["seq_len"] == load_shipped("llama-3-8b").seq_len == 8192 and default == explicit
    assert "at seq_len 8192" in main(capsys, "cost", "--config", "llama-3-8b", "--tokens", "1e12")[1]
