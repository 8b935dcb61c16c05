"""Validation loss of a transformers checkpoint, loaded into OUR model with ``moe.from_hf``, on a text corpus.

    python -m experiments.eval_hf path/to/folder                       # Shakespeare's held-out works
    python -m experiments.eval_hf path/to/folder --text my.txt --window 512 --max-tokens 65536

The folder is what ``save_pretrained`` writes: ``config.json``, ``*.safetensors`` and the checkpoint's own
``tokenizer.json`` (read with the ``tokenizers`` package; the text must be tokenized the way the model was
trained). The text is the default validation split (Shakespeare: hamlet, macbeth, tempest, sonnets, as in
``conf/data/shakespeare.yaml``) or a UTF-8 file. It is cut into non-overlapping windows of ``--window``
tokens (at most the model's ``seq_len``); the loss is the mean next-token cross-entropy in nats over every
predicted token (``window - 1`` per window), printed with its perplexity and the tokens evaluated.
Price the same checkpoint with ``python -m accounting params --config path/to/folder/config.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

import moe

from .data import load_split

VAL_WORKS = ("hamlet", "macbeth", "tempest", "sonnets")


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, ids: Sequence[int], window: int, batch: int = 8) -> dict:
    """Mean next-token cross-entropy (nats) of ``model`` over non-overlapping windows of ``ids``.

    Returns ``{"loss_nats", "perplexity", "predicted_tokens", "windows", "window"}``; a trailing piece
    shorter than ``window`` is dropped.
    """
    n = len(ids) // window
    if n < 1:
        raise ValueError(f"{len(ids)} tokens do not fill one window of {window}")
    was_training = model.training
    model.eval()
    data = torch.tensor(list(ids[: n * window]), dtype=torch.long).view(n, window)
    total, count = 0.0, 0
    try:
        for i in range(0, n, batch):
            x = data[i:i + batch].to(next(model.parameters()).device)
            logits = model(x[:, :-1]).logits.float()
            total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1),
                                     reduction="sum").item()
            count += x[:, 1:].numel()
    finally:
        model.train(was_training)
    loss = total / count
    return {"loss_nats": loss, "perplexity": math.exp(loss), "predicted_tokens": count, "windows": n,
            "window": window}


def validation_text(text_file: str | None) -> tuple[str, str]:
    """(text, description): a UTF-8 file, or the held-out Shakespeare works."""
    if text_file:
        p = Path(text_file)
        if not p.is_file():
            raise ValueError(f"--text {p}: no such file")
        return p.read_text(encoding="utf-8", errors="replace"), str(p)
    split = load_split("shakespeare", None, list(VAL_WORKS), 0.1)
    return "\n\n".join(text for _, text in split.val), "shakespeare validation works " + ", ".join(VAL_WORKS)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", help="config.json + *.safetensors + tokenizer.json")
    p.add_argument("--text", help="a UTF-8 text file (default: Shakespeare's validation works)")
    p.add_argument("--window", type=int, default=256, help="tokens per window (<= the model's seq_len)")
    p.add_argument("--max-tokens", type=int, default=16384, help="evaluate at most this many tokens")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (0: torch's default)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        from tokenizers import Tokenizer
        folder = Path(a.folder)
        if not (folder / "tokenizer.json").is_file():
            raise ValueError(f"{folder}: no tokenizer.json (the checkpoint's own tokenizer is needed)")
        model = moe.from_hf(folder, dtype=torch.bfloat16 if a.dtype == "bf16" else torch.float32).to(a.device)
        if a.window > model.shape.seq_len:
            raise ValueError(f"--window {a.window} exceeds the model's seq_len {model.shape.seq_len}")
        text, source = validation_text(a.text)
        ids = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text).ids[: a.max_tokens]
        result = evaluate_loss(model, ids, a.window, a.batch)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result.update(checkpoint=str(folder), text=source, dtype=a.dtype)
    if a.json:
        print(json.dumps(result))
    else:
        print(f"{folder}: {result['loss_nats']:.4f} nats/token (perplexity {result['perplexity']:.2f}) over "
              f"{result['predicted_tokens']:,} predicted tokens ({result['windows']} windows of {a.window}) "
              f"of {source}, {a.dtype}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
