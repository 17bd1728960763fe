"""Shared test set-up: no test may use the network, none touches the user's
cache, and the tests share one tiny model shape."""

import os
import socket
from pathlib import Path

import pytest
import torch

from llm.model import GPTConfig, GPTModel

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Refuse connections and name lookups for anything but the loopback address."""
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        if (
            sock.family in (socket.AF_INET, socket.AF_INET6)
            and address[0] not in LOOPBACK
        ):
            raise OSError(f"tests must not use the network (connect to {address!r})")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in LOOPBACK:
            raise socket.gaierror(
                f"tests must not use the network (look-up of {host!r})"
            )
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Each test gets an empty cache folder of its own."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("LLM_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def mirror() -> Path:
    """The data mirror named by LLM_DATA_DIR (CI: ../shared/data)."""
    value = os.environ.get("LLM_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.fail(
            "set LLM_DATA_DIR to the data mirror folder (for example "
            "../shared/data) to run this test"
        )
    return Path(value)


# The one small model shape the tests share: big enough to have every part
# (two layers, two heads, a vocabulary larger than the context), small enough
# that a forward pass takes well under a millisecond.
TINY_CONFIG = GPTConfig(
    vocab_size=64, context_length=16, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.0
)


@pytest.fixture
def tiny_config() -> GPTConfig:
    """`TINY_CONFIG`; change fields with `tiny_config.replace(...)`."""
    return TINY_CONFIG


@pytest.fixture
def make_tiny_model():
    """A factory: `make_tiny_model(seed=0, **config_changes)` builds a seeded
    `GPTModel` of `TINY_CONFIG` (with the changes), in eval mode."""

    def make(seed: int = 0, **changes) -> GPTModel:
        torch.manual_seed(seed)
        return GPTModel(TINY_CONFIG.replace(**changes)).eval()

    return make


@pytest.fixture(scope="session")
def dead_pid() -> int:
    """The process id of a process that has exited (and been reaped)."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid
