"""Shared test set-up: no test may use the network, and none touches the user's cache."""

import os
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Refuse connections and name lookups for anything but the loopback address."""
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            raise OSError(f"tests must not use the network (connect to {address!r})")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in LOOPBACK:
            raise socket.gaierror(f"tests must not use the network (look-up of {host!r})")
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
        pytest.fail("set LLM_DATA_DIR to the data mirror folder (for example ../shared/data) to run this test")
    return Path(value)
