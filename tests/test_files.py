"""llm.files: atomic writes, permissions, and clean-up after killed processes."""

import os
import stat
from pathlib import Path

import pytest

from llm.files import remove_stale_temporaries, temporary_prefix, write_atomically


def write_text(text: str):
    return lambda temporary: Path(temporary).write_text(text, encoding="utf-8")


def test_write_atomically_writes_the_file_and_leaves_no_temporary(tmp_path):
    path = write_atomically(tmp_path / "sub" / "a.txt", write_text("new"))
    assert path.read_text(encoding="utf-8") == "new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old", encoding="utf-8")

    def fails(temporary):
        Path(temporary).write_text("half", encoding="utf-8")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, fails)
    assert path.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


@pytest.mark.parametrize(
    "umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)]
)
def test_written_files_get_the_permissions_of_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = write_atomically(tmp_path / "a.txt", write_text("x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_temporaries_of_exited_processes_are_removed_and_live_ones_kept(
    tmp_path, dead_pid
):
    stale_file = tmp_path / f".a.txt.{dead_pid}.x1y2.tmp"
    stale_folder = tmp_path / f".b.bin.{dead_pid}.z3.tmp"
    live = tmp_path / f"{temporary_prefix('c.txt')}w4.tmp"
    unrelated = tmp_path / ".hidden.42.notes"
    stale_file.write_text("", encoding="utf-8")
    stale_folder.mkdir()
    (stale_folder / "download").write_text("", encoding="utf-8")
    live.write_text("", encoding="utf-8")
    unrelated.write_text("", encoding="utf-8")
    remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, unrelated.name]
    )


def test_write_atomically_cleans_up_after_a_killed_writer(tmp_path, dead_pid):
    stale = tmp_path / f".a.txt.{dead_pid}.q9.tmp"
    stale.write_text("half", encoding="utf-8")
    write_atomically(tmp_path / "a.txt", write_text("whole"))
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_missing_folder_is_left_alone():
    remove_stale_temporaries(Path("/no/such/folder"))
