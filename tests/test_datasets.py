"""The data layer: registry, mirror, cache, downloads and their failures."""

import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

import pooch
import pytest

from llm import datasets
from llm.datasets import (
    REGISTRY,
    ChecksumError,
    DataError,
    DataFile,
    DataUnavailableError,
    UnknownDataFileError,
    fetch,
    gutenberg_books,
    read_text,
)
from llm.errors import LLMError

CONTENT = b"The same bytes for everyone.\n" * 100


def files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


class Server:
    """A static file server on 127.0.0.1 that counts the requests it answers."""

    def __init__(self, root: Path):
        self.requests = 0
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):
                server.requests += 1
                # promise 1000 bytes, send 10, hang up
                if self.path == "/truncated":
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.write(b"0123456789")
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    (root / "file.txt").write_bytes(CONTENT)
    with zipfile.ZipFile(root / "archive.zip", "w") as archive:
        archive.writestr("inner/data.tsv", CONTENT)
    served = Server(root)
    yield served
    served.close()


def register(
    monkeypatch,
    name: str,
    url: str,
    content: bytes = CONTENT,
    member: str | None = None,
) -> DataFile:
    file = DataFile(
        name,
        url,
        hashlib.sha256(content).hexdigest(),
        len(content),
        "test file",
        member,
    )
    monkeypatch.setitem(REGISTRY, name, file)
    return file


@pytest.fixture
def no_mirror(monkeypatch):
    monkeypatch.delenv("LLM_DATA_DIR", raising=False)


# --- the registry -----------------------------------------------------------


def test_registry_lists_every_file_of_the_mirror_with_its_checksum(mirror):
    skipped = {"README.md", "gutenberg/manifest.json"}
    mirrored = {
        path.relative_to(mirror).as_posix(): path
        for path in files_under(mirror)
        if not path.relative_to(mirror).as_posix().startswith("tiktoken-cache/")
    }
    names = set(mirrored) - skipped
    assert names == set(REGISTRY)
    for name in names:
        assert datasets.sha256_of(mirrored[name]) == REGISTRY[name].sha256, name
        assert mirrored[name].stat().st_size == REGISTRY[name].size, name


def test_gutenberg_entries_match_the_manifest(mirror):
    manifest = json.loads(
        (mirror / "gutenberg/manifest.json").read_text(encoding="utf-8")
    )
    books = {file.name: file for file in gutenberg_books()}
    assert len(books) == len(manifest) == 51
    for entry in manifest:
        file = books[f"gutenberg/pg{entry['gutenberg_id']}.txt"]
        assert (file.url, file.sha256, file.size) == (
            entry["raw_url"],
            entry["sha256"],
            entry["bytes"],
        )
        assert file.description == f"{entry['title']}, by {entry['author']}"


def test_every_registered_url_is_https_and_every_checksum_is_sha256():
    for file in REGISTRY.values():
        assert file.url.startswith("https://"), file.name
        assert len(file.sha256) == 64 and int(file.sha256, 16) >= 0, file.name


def test_the_sms_spam_file_is_taken_from_inside_its_zip_archive():
    file = REGISTRY["SMSSpamCollection"]
    assert file.url.endswith(".zip") and file.member == "SMSSpamCollection"


# --- the mirror -------------------------------------------------------------


def test_fetch_uses_the_mirror_offline_and_writes_nothing_to_the_cache(
    mirror, private_cache
):
    path = fetch("the-verdict.txt")
    assert path == mirror / "the-verdict.txt"
    assert read_text("the-verdict.txt").startswith("I HAD always thought Jack Gisburn")
    assert files_under(private_cache) == []


def test_fetch_takes_the_plain_sms_file_from_the_mirror(mirror):
    lines = read_text("SMSSpamCollection").splitlines()
    assert len(lines) == 5574
    assert {line.split("\t", 1)[0] for line in lines} == {"ham", "spam"}


def test_a_damaged_mirror_copy_is_refused_with_a_clear_message(tmp_path, monkeypatch):
    (tmp_path / "the-verdict.txt").write_text("not the story", encoding="utf-8")
    monkeypatch.setenv("LLM_DATA_DIR", str(tmp_path))
    with pytest.raises(ChecksumError) as caught:
        fetch("the-verdict.txt")
    message = str(caught.value)
    assert "the-verdict.txt" in message
    assert REGISTRY["the-verdict.txt"].url in message
    assert "LLM_DATA_DIR" in message


def test_a_mirror_without_the_file_falls_back_to_the_cache(
    tmp_path, monkeypatch, private_cache, server
):
    # an empty mirror
    monkeypatch.setenv("LLM_DATA_DIR", str(tmp_path))
    register(monkeypatch, "file.txt", server.url("file.txt"))
    assert fetch("file.txt", progress=False) == private_cache / "file.txt"


# --- names and missing files -------------------------------------------------


def test_an_unknown_name_is_an_error_that_suggests_the_close_ones():
    with pytest.raises(
        UnknownDataFileError,
        match=r"'the-verdict.text'.*Did you mean 'the-verdict.txt'",
    ):
        fetch("the-verdict.text")


def test_a_missing_file_without_network_names_file_url_and_variable(
    no_mirror, monkeypatch, private_cache
):
    file = REGISTRY["the-verdict.txt"]
    with pytest.raises(DataUnavailableError) as caught:
        fetch("the-verdict.txt", progress=False)
    message = str(caught.value)
    assert (
        "'the-verdict.txt'" in message
        and file.url in message
        and "LLM_DATA_DIR" in message
    )
    assert files_under(private_cache) == []


def test_cache_dir_follows_the_environment_variable(private_cache):
    assert datasets.cache_dir() == private_cache


def test_cache_dir_defaults_to_the_platform_cache(monkeypatch):
    monkeypatch.delenv("LLM_CACHE_DIR")
    assert datasets.cache_dir() == Path(pooch.os_cache("llm-from-scratch-book"))


# --- downloads ----------------------------------------------------------------


def test_a_download_lands_verified_in_the_cache_and_is_reused(
    no_mirror, monkeypatch, private_cache, server
):
    register(monkeypatch, "sub/file.txt", server.url("file.txt"))
    path = fetch("sub/file.txt", progress=False)
    assert path == private_cache / "sub" / "file.txt"
    assert path.read_bytes() == CONTENT
    assert fetch("sub/file.txt", progress=False) == path
    assert server.requests == 1
    assert files_under(private_cache) == [path]


def test_a_corrupted_cached_copy_is_downloaded_again(
    no_mirror, monkeypatch, private_cache, server
):
    register(monkeypatch, "file.txt", server.url("file.txt"))
    (private_cache / "file.txt").write_bytes(b"half a fi")
    assert fetch("file.txt", progress=False).read_bytes() == CONTENT
    assert server.requests == 1


def test_a_download_with_the_wrong_checksum_leaves_nothing_behind(
    no_mirror, monkeypatch, private_cache, server
):
    register(monkeypatch, "file.txt", server.url("file.txt"), content=b"other bytes")
    with pytest.raises(ChecksumError, match="Nothing was saved") as caught:
        fetch("file.txt", progress=False)
    assert server.url("file.txt") in str(caught.value) and "LLM_DATA_DIR" in str(
        caught.value
    )
    assert files_under(private_cache) == []


def test_a_truncated_download_leaves_nothing_behind(
    no_mirror, monkeypatch, private_cache, server
):
    register(monkeypatch, "file.txt", server.url("truncated"))
    with pytest.raises(DataUnavailableError, match="file.txt"):
        fetch("file.txt", progress=False)
    assert files_under(private_cache) == []


def test_an_interrupted_download_leaves_nothing_behind(
    no_mirror, monkeypatch, private_cache, server
):
    register(monkeypatch, "file.txt", server.url("file.txt"))

    def interrupted(self, url, output_file, pooch_, check_only=False):
        Path(output_file).write_bytes(CONTENT[:50])
        # the reader pressed Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fetch("file.txt", progress=False)
    assert list(private_cache.rglob("*")) == []


def test_a_zip_member_is_extracted_and_verified(
    no_mirror, monkeypatch, private_cache, server
):
    register(
        monkeypatch, "data.tsv", server.url("archive.zip"), member="inner/data.tsv"
    )
    path = fetch("data.tsv", progress=False)
    assert path.read_bytes() == CONTENT
    assert files_under(private_cache) == [path]


def test_a_zip_without_the_member_is_a_clear_error(
    no_mirror, monkeypatch, private_cache, server
):
    register(monkeypatch, "data.tsv", server.url("archive.zip"), member="elsewhere.tsv")
    with pytest.raises(DataUnavailableError, match="'elsewhere.tsv'"):
        fetch("data.tsv", progress=False)
    assert files_under(private_cache) == []


def test_a_download_shows_a_progress_bar(no_mirror, monkeypatch, server, capsys):
    register(monkeypatch, "file.txt", server.url("file.txt"))
    fetch("file.txt")
    assert "100%" in (err := capsys.readouterr().err)
    # tqdm's byte counter
    assert f"{len(CONTENT) / 1000:.2f}k/{len(CONTENT) / 1000:.2f}k" in err


# --- misleading situations get messages that say what is wrong ---------------


def test_a_mirror_variable_naming_a_missing_folder_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_DATA_DIR", str(tmp_path / "no-such-folder"))
    with pytest.raises(
        DataError, match=r"LLM_DATA_DIR is set to .*no-such-folder.*does not exist"
    ):
        fetch("the-verdict.txt")


def test_a_mirror_variable_naming_a_file_is_reported(tmp_path, monkeypatch):
    (tmp_path / "data.txt").write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("LLM_DATA_DIR", str(tmp_path / "data.txt"))
    with pytest.raises(
        DataError, match=r"LLM_DATA_DIR is set to .*data.txt.*is a file"
    ):
        fetch("the-verdict.txt")


def test_an_unwritable_cache_is_a_data_error_that_names_the_cache_variable(
    no_mirror, monkeypatch, tmp_path, server
):
    # A cache folder below a regular file cannot be created, even by root.
    (tmp_path / "plain-file").write_text("", encoding="utf-8")
    monkeypatch.setenv("LLM_CACHE_DIR", str(tmp_path / "plain-file" / "cache"))
    register(monkeypatch, "file.txt", server.url("file.txt"))
    with pytest.raises(DataUnavailableError) as caught:
        fetch("file.txt", progress=False)
    message = str(caught.value)
    assert "LLM_CACHE_DIR" in message and "file.txt" in message
    assert server.requests == 0


def test_a_damaged_cached_copy_without_network_is_reported_as_damaged(
    no_mirror, monkeypatch, private_cache
):
    file = REGISTRY["the-verdict.txt"]
    (private_cache / file.name).write_text("half a sto", encoding="utf-8")
    with pytest.raises(DataUnavailableError) as caught:
        fetch(file.name, progress=False)
    message = str(caught.value)
    assert "damaged" in message and "not in the cache" not in message
    assert file.url in message


def test_a_download_folder_left_by_a_killed_process_is_removed_on_the_next_fetch(
    no_mirror, monkeypatch, private_cache, server, dead_pid
):
    stale = private_cache / f".file.txt.{dead_pid}.abc123.tmp"
    stale.mkdir()
    (stale / "download").write_bytes(CONTENT[:10])
    register(monkeypatch, "file.txt", server.url("file.txt"))
    path = fetch("file.txt", progress=False)
    assert files_under(private_cache) == [path]
    assert not stale.exists()


def test_data_errors_are_llm_errors():
    assert issubclass(DataError, LLMError)
    assert issubclass(ChecksumError, DataError)
    assert issubclass(UnknownDataFileError, LookupError)
