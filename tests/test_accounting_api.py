"""The Python API (issue 22, item 7): one function per CLI command returning a frozen dataclass whose
``to_dict()`` is the command's JSON; `load_shape` takes names, files and folders; defaults equal the CLI's
(two flops per multiply-add, causal attention); the CLI's command registry."""
import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import pytest

import accounting
from accounting import FLOP, MAC, cli
from accounting.reproduce import deepseek
from accounting.flops import training_flops_per_token
from accounting.hf_config import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[1]

# (API call, the same command's argv): JSON must be identical
CASES = {
    "table3": (lambda: accounting.table3(), ["table3"]),
    "deepseek": (lambda: accounting.deepseek(), ["deepseek"]),
    "params": (lambda: accounting.parameters("deepseek-v3"), ["params", "--config", "deepseek-v3"]),
    "params-file": (lambda: accounting.parameters(str(ROOT / "reports/data/runs/demo/moe/tiny-seed0"), seq_len=32),
                    ["params", "--config", str(ROOT / "reports/data/runs/demo/moe/tiny-seed0"), "--seq-len", "32"]),
    "cost": (lambda: accounting.price("deepseek-v3", "14.8T", 4096, gpu="h800", usd_per_hour=2, mfu=0.391),
             ["cost", "--config", "deepseek-v3", "--tokens", "14.8T", "--seq-len", "4096", "--gpu", "h800",
              "--usd-per-hour", "2", "--mfu", "0.391"]),
    "cost-defaults": (lambda: accounting.price("llama-3-8b", 1e12),
                      ["cost", "--config", "llama-3-8b", "--tokens", "1e12"]),
    "serve": (lambda: accounting.serve("deepseek-v3", "h800", [1, 64], 4096, gpus=144, redundant_experts=32,
                                       weights="fp8"),
              ["serve", "--config", "deepseek-v3", "--gpu", "h800", "--gpus", "144", "--redundant-experts", "32",
               "--weights", "fp8", "--batch", "1", "64", "--context", "4096"]),
    "serve-dense": (lambda: accounting.serve("mixtral-8x7b", "h100-sxm", 0.5, 1024, gpus=2,
                                             dense_equivalent="active", cache_hit_share=0.3),
                    ["serve", "--config", "mixtral-8x7b", "--gpu", "h100-sxm", "--gpus", "2", "--batch", "0.5",
                     "--context", "1024", "--dense-equivalent", "active", "--cache-hit-share", "0.3"]),
    "serving-check": (lambda: accounting.serving_check(8192, 1024),
                      ["serving-check", "--context", "8192", "--prompt-len", "1024"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_api_result_is_the_cli_json(case):
    call, argv = CASES[case]
    result = call()
    assert dataclasses.is_dataclass(result) and isinstance(result, accounting.Result)
    text = cli.run(argv + ["--format", "json"])
    assert json.dumps(result.to_dict(), indent=2) == text  # byte for byte
    assert json.loads(json.dumps(result.to_dict())) == json.loads(text)
    field = dataclasses.fields(result)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(result, field, None)


def test_to_dict_is_asdict_without_absent_optional_fields():
    r = accounting.parameters(str(ROOT / "conf" / "model" / "moe.yaml"))
    assert r.published is None and "published" not in r.to_dict()
    assert dataclasses.asdict(r) == {**r.to_dict(), "published": None}
    shipped = accounting.parameters("dbrx")
    assert dataclasses.asdict(shipped) == shipped.to_dict() and shipped.published["total_params"] == 132e9


def test_load_shape_takes_names_files_folders_and_shapes(tmp_path):
    by_name = accounting.load_shape("qwen3-30b-a3b")
    assert by_name.name == "qwen3-30b-a3b" and by_name.n_experts == 128
    by_file = accounting.load_shape(CONFIG_DIR / "qwen3-30b-a3b.json")
    folder = tmp_path / "Qwen3-30B-A3B"
    folder.mkdir()
    shutil.copy(CONFIG_DIR / "qwen3-30b-a3b.json", folder / "config.json")
    by_folder = accounting.load_shape(folder, seq_len=4096)
    assert by_folder.name == "Qwen3-30B-A3B" and by_folder.seq_len == 4096
    assert by_file == by_name and by_folder.replace(name="qwen3-30b-a3b", seq_len=by_name.seq_len) == by_name
    assert accounting.load_shape(by_name, seq_len=128) == by_name.replace(seq_len=128)
    assert accounting.load_shape(ROOT / "reports/data/runs/demo/moe/tiny-seed0").n_experts == 8
    with pytest.raises(accounting.ConfigSpecError, match="shipped"):
        accounting.load_shape("no-such-model")
    with pytest.raises(ValueError, match="seq_len"):
        accounting.load_shape("dbrx", seq_len=0)


def test_training_flops_default_equals_the_cli():
    """`accounting.training_flops(shape, 1e12, 4096)` is the cost command's figure (2 per MAC, causal)."""
    shape = accounting.load_shape("qwen3-30b-a3b")
    cli_json = json.loads(cli.run(["cost", "--config", "qwen3-30b-a3b", "--tokens", "1e12", "--seq-len", "4096",
                                   "--format", "json"]))
    assert accounting.training_flops(shape, 1e12, 4096) == cli_json["training_flops_fma2"]
    assert accounting.price(shape, 1e12, 4096).training_flops_fma2 == cli_json["training_flops_fma2"]
    assert training_flops_per_token(shape, 4096) == cli_json["training_flops_fma2_per_token"]
    note = accounting.training_flops(shape, 1e12, 4096, flops_per_mac=MAC, causal=False)  # the note's convention
    assert cli_json["training_flops_fma2"] / note == pytest.approx(1.65, abs=0.01)
    assert accounting.forward_flops(shape, 16)["total"] == accounting.forward_flops(shape, 16, flops_per_mac=FLOP)["total"]
    assert accounting.decode_flops_per_token(shape, 4096) == cli_json["decode_flops_fma2_per_token"]


def test_the_note_reproduction_keeps_the_notes_convention():
    """accounting.reproduce.deepseek passes one flop per multiply-add explicitly: its exact DeepSeek estimate is unchanged."""
    shape = deepseek.deepseek_v3_shape(4096)
    m = deepseek.deepseek_v3_estimates(shape)["methods"]["exact_causal_n4096"]
    assert m["flops_mac_per_token"] == accounting.training_flops(shape, 1, 4096, flops_per_mac=MAC)
    assert m["flops_fma2_per_token"] == accounting.training_flops(shape, 1, 4096)


def test_price_checks_its_inputs():
    for kwargs, needle in [({"tokens": "lots"}, "tokens"), ({"tokens": -1}, "tokens"),
                           ({"tokens": 1e12, "seq_len": 0}, "seq_len"), ({"tokens": 1e12, "mfu": 1.5}, "mfu"),
                           ({"tokens": 1e12, "gpu": "tpu"}, "tpu")]:
        with pytest.raises(ValueError, match=needle):
            accounting.price("llama-3-8b", **kwargs)
    with pytest.raises(ValueError, match="batch"):
        accounting.serve("llama-3-8b", "h100-sxm", [], 128)


def test_a_new_command_is_one_registration(capsys):
    """The pattern the CLI's next commands follow: options, a result dataclass, a table renderer."""
    @dataclasses.dataclass(frozen=True)
    class EchoResult(accounting.Result):
        name: str
        total_params: int

    def arguments(p: argparse.ArgumentParser) -> None:
        cli.config_argument(p)

    def result(args) -> EchoResult:
        shape = accounting.load_shape(args.config)
        return EchoResult(shape.name, accounting.count_parameters(shape).total)

    cli.register(cli.Command("echo-total", "test only", arguments, result, lambda d: f"{d['name']}: {d['total_params']}"))
    try:
        assert cli.main(["--format", "json", "echo-total", "--config", "dbrx"]) == 0
        assert json.loads(capsys.readouterr().out) == {"name": "dbrx", "total_params": 131_596_523_520}
        assert cli.main(["echo-total", "--config", "dbrx"]) == 0
        assert capsys.readouterr().out == "dbrx: 131596523520\n"
        assert cli.main(["echo-total", "--config", "dbrx", "--format", "csv"]) == 0
        assert capsys.readouterr().out == "field,value\nname,dbrx\ntotal_params,131596523520\n"
        with pytest.raises(ValueError, match="twice"):
            cli.register(cli.Command("echo-total", "", arguments, result, str))
    finally:
        del cli.COMMANDS["echo-total"]
