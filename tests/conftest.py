"""Fixtures shared by the test modules (pytest finds them by name; nothing is imported)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one intra-op thread; with 2 threads on a busy 2-core machine OpenMP's
    barriers made these tests up to 100x slower. Restores the previous setting afterwards. Model test
    modules use it for every test: ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def clear_hydra():
    """Hydra's global state cleared before and after a test (the compose API keeps it between calls). Modules
    that compose configs use it for every test: ``pytestmark = pytest.mark.usefixtures("clear_hydra")``."""
    from hydra.core.global_hydra import GlobalHydra
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A data/tokenizer cache folder shared by one module's training tests."""
    return str(tmp_path_factory.mktemp("cache"))
