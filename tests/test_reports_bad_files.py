"""reports.collect skips bad run files with a one-line warning and never mislabels a run (issue 16, item 11)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from reports.collect import collect

SHAPE = {"vocab_size": 256, "d_model": 32, "n_layers": 2, "n_heads": 2, "seq_len": 16}


def _run(root: Path, name: str, moe: bool = True, lines: list | None = None) -> Path:
    run = root / "bad" / name / "tiny-seed0"
    run.mkdir(parents=True)
    shape = dict(SHAPE, n_experts=4, top_k=2) if moe else dict(SHAPE)
    cfg = {"name": "bad", "seed": 0, "model": {"name": name, "size": "tiny", "shape": shape,
                                                 "router": {"balancing": "aux_loss"}, "backend": "loop"}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "env.json").write_text(json.dumps({"device": "cpu"}))
    good = [json.dumps({"step": s, "tokens": 64 * s, "train_loss": 5.0 - 0.1 * s}) for s in (1, 2, 3)]
    (run / "metrics.jsonl").write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode()
                                                 for x in (lines or good)) + b"\n")
    return run


@pytest.mark.parametrize("bad", [b"17", b'{"train_loss": 1.0}', b'{"step": "abc"}', b"\xff\xfe\x00binary",
                                 b'{"step": 2, "tra', b"[1, 2]"])
def test_a_bad_metrics_line_is_skipped_with_a_warning(tmp_path, capsys, bad):
    good = [json.dumps({"step": s, "train_loss": 5.0}).encode() for s in (1, 3)]
    _run(tmp_path, "moe", lines=[good[0], bad, good[1]])
    c = collect([tmp_path])
    assert sorted(c.metrics["step"]) == [1, 3]
    err = capsys.readouterr().err
    assert "metrics.jsonl line 2: not a metrics record" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("text", ["- a\n- list\n", "model: [unclosed\n", "model:\n  shape: 3\n", ""])
def test_an_unusable_config_skips_the_run_instead_of_labelling_it(tmp_path, capsys, text):
    bad = _run(tmp_path, "moe")
    (bad / "config.yaml").write_text(text)
    _run(tmp_path, "dense", moe=False)
    c = collect([tmp_path])
    assert list(c.runs["family"]) == ["dense"] and set(c.metrics["family"]) == {"dense"}
    err = capsys.readouterr().err
    assert "bad/moe/tiny-seed0" in err and "skipped" in err


def test_a_bad_env_or_summary_is_ignored_with_a_warning(tmp_path, capsys):
    run = _run(tmp_path, "moe")
    (run / "env.json").write_text("[1, 2, 3]")
    (run / "summary.json").write_text("{not json")
    c = collect([tmp_path])
    assert c.runs.iloc[0]["family"] == "moe" and bool(c.runs.iloc[0]["is_moe"])
    err = capsys.readouterr().err
    assert "env.json: holds a list" in err and "summary.json: not valid JSON" in err
