"""Tokenizers: raw bytes (vocabulary 256) and a byte-level BPE trained in-process with HF `tokenizers`.

The BPE is trained on the training split only and cached as JSON under ``<cache>/tokenizers/``, keyed by
a hash of the training texts and the vocabulary size, so a second run (or another rank) loads it in
milliseconds. Cache files are written atomically (temporary file + ``os.replace``).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol, Sequence

from .atomic import write_text_atomic


class Tokenizer(Protocol):
    vocab_size: int
    name: str

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens: vocabulary 256, no training, no cache."""

    vocab_size = 256
    name = "bytes"

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class BPETokenizer:
    """A trained byte-level BPE (`tokenizers.Tokenizer`); ``vocab_size`` is the trained vocabulary."""

    def __init__(self, tok, path: Path | None = None):
        self.tok, self.path = tok, path
        self.vocab_size = tok.get_vocab_size()
        self.name = f"bpe{self.vocab_size}"

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(list(texts))]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode([int(i) for i in ids])


def texts_key(texts: Sequence[str], *extra: object) -> str:
    """A 16-hex-digit content hash of ``texts`` (order matters) and ``extra`` settings."""
    h = hashlib.sha256(repr(extra).encode())
    for t in texts:
        h.update(hashlib.sha256(t.encode("utf-8")).digest())
    return h.hexdigest()[:16]


def train_bpe(texts: Sequence[str], vocab_size: int):
    """Train a byte-level BPE of ``vocab_size`` tokens (including the 256 byte symbols) on ``texts``."""
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def bpe_cache_path(cache_dir: str | Path, texts: Sequence[str], vocab_size: int) -> Path:
    """Where the BPE trained on ``texts`` with ``vocab_size`` is cached."""
    return Path(cache_dir) / "tokenizers" / f"bpe{vocab_size}-{texts_key(texts, 'bpe-v1', vocab_size)}.json"


def load_or_train_bpe(texts: Sequence[str], vocab_size: int, cache_dir: str | Path) -> BPETokenizer:
    """The cached BPE for (``texts``, ``vocab_size``), training and caching it on a miss."""
    from tokenizers import Tokenizer as HFTokenizer

    path = bpe_cache_path(cache_dir, texts, vocab_size)
    if path.exists():
        return BPETokenizer(HFTokenizer.from_file(str(path)), path)
    tok = train_bpe(texts, vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's pid in the name lets a later run tell a stale temporary (its writer is gone) from a live one.
    write_text_atomic(path, tok.to_str(), suffix=f".{os.getpid()}.tmp")
    return BPETokenizer(tok, path)


def get_tokenizer(kind: str, train_texts: Sequence[str], vocab_size: int, cache_dir: str | Path) -> Tokenizer:
    """``bytes`` -> `ByteTokenizer`; ``bpe`` -> the cached or freshly trained `BPETokenizer`."""
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "bpe":
        return load_or_train_bpe(train_texts, vocab_size, cache_dir)
    raise ValueError(f"unknown tokenizer {kind!r} (bpe or bytes)")
