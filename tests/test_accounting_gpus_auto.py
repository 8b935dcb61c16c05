"""``--gpus auto`` on ``serve`` and ``cost``: the smallest GPU count that fits, its layout and the reason;
the JSON of the invocations without it is unchanged (no new keys), bad values exit 2 with one line."""
from __future__ import annotations

import json

import pytest

from accounting import api
from accounting.cli import main
from accounting.hardware import get_hardware
from accounting.hf_config import load_shipped
from accounting.serving import Layout as ServeLayout, memory_fit
from accounting.gpu_count import auto_layout
from accounting.training_memory import plan
from accounting.training_settings import Settings


def _json(capsys, argv):
    assert main([*argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_serve_gpus_auto_is_the_smallest_power_of_two_that_fits(capsys):
    argv = ["serve", "--config", "deepseek-v3", "--gpu", "h800", "--batch", "1", "32", "--context", "4096"]
    d = _json(capsys, [*argv, "--gpus", "auto"])
    a = d["gpus_auto"]
    g = a["gpus"]
    assert all(r["gpus"] == g and r["fits"] for r in d["rows"])  # every batch fits, the largest (32) sets G
    shape, hw = load_shipped("deepseek-v3"), get_hardware("h800")
    assert memory_fit(shape, hw, ServeLayout(gpus=g), 32.0, 4096).fits
    assert not memory_fit(shape, hw, ServeLayout(gpus=g // 2), 32.0, 4096).fits
    assert a["bytes_needed_per_gpu"] == pytest.approx(a["weights_bytes_per_gpu"] + a["kv_cache_bytes_per_gpu"]
                                                      + a["workspace_bytes_per_gpu"])
    assert f"{g // 2} GPUs would need" in a["reason"]
    # the rows are those of an explicit --gpus G
    assert _json(capsys, [*argv, "--gpus", str(g)])["rows"] == d["rows"]


def test_serve_gpus_auto_dense_one_gpu_and_text(capsys):
    assert main(["serve", "--config", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "auto", "--batch", "1",
                 "--context", "1024"]) == 0
    out = capsys.readouterr().out
    assert "--gpus auto: 1 GPU (tp 1, ep 1)" in out


def test_cost_gpus_auto_uses_the_training_memory_planner(capsys):
    d = _json(capsys, ["cost", "--config", "qwen3-30b-a3b", "--tokens", "36T", "--seq-len", "4096",
                       "--gpu", "h100-sxm", "--mfu", "0.4", "--gpus", "auto"])
    a = d["gpus_auto"]
    shape, hw = load_shipped("qwen3-30b-a3b"), get_hardware("h100-sxm")
    r, _ = auto_layout(shape, Settings(seq_len=4096, micro_batch=1), hw)
    assert a["layout"]["gpus"] == r.layout.gpus == d["gpus"]
    assert a["per_gpu_bytes"]["total"] <= a["capacity_bytes"] == hw.memory_bytes
    assert d["wall_clock_days"] == pytest.approx(d["gpu_hours"] / d["gpus"] / 24)
    # no layout of half as many GPUs fits (the search is exhaustive below the count chosen)
    from accounting.gpu_count import candidate_layouts
    assert not any(plan(shape, Settings(seq_len=4096, micro_batch=1), lay, hw).fits
                   for lay in candidate_layouts(shape, d["gpus"] // 2, hw.gpus_per_node))


def test_existing_json_has_no_new_keys():
    assert "gpus_auto" not in api.price("deepseek-v3", "14.8T", 4096, gpu="h800", gpus=2048).to_dict()
    assert "gpus_auto" not in api.price("deepseek-v3", "14.8T").to_dict()
    assert "gpus_auto" not in api.serve("deepseek-v3", "h800", [1], 4096, gpus=64).to_dict()


@pytest.mark.parametrize("argv, message", [
    (["cost", "--config", "deepseek-v3", "--tokens", "1T", "--gpus", "auto"], "needs a --gpu with its memory"),
    (["cost", "--config", "deepseek-v3", "--tokens", "1T", "--gpus", "autox"], "a positive integer or 'auto'"),
    (["serve", "--config", "deepseek-v3", "--gpu", "h800", "--gpus", "0", "--batch", "1", "--context", "4"],
     "a positive integer or 'auto'"),
    (["serve", "--config", "deepseek-v3", "--gpu", "h800", "--gpus", "auto", "--batch", "1e6", "--context", "4096"],
     "does not fit"),
])
def test_bad_gpus_one_line_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
