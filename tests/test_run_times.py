"""tools/run_times.py: the recorded page run times and the phrase pages show."""

import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
from book import toc_notebooks  # noqa: E402
from run_times import (  # noqa: E402
    describe_run_time,
    far_from,
    read_run_times,
    record_run_times,
)


@pytest.mark.parametrize(
    ("seconds", "phrase"),
    [
        (5, "under a minute"),
        (59.9, "under a minute"),
        (60, "about 1 minute"),
        (89, "about 1 minute"),
        (90, "about 2 minutes"),
        (780, "about 13 minutes"),
    ],
)
def test_run_time_phrase_rounds_to_whole_minutes(seconds, phrase):
    assert describe_run_time(seconds) == phrase


def test_far_from_ignores_small_and_flags_large_differences():
    # five times as long, but under a minute apart
    assert not far_from(50, 10)
    assert not far_from(300, 200)
    assert far_from(500, 200)
    assert far_from(100, 300)


def test_recording_keeps_other_pages_times(tmp_path):
    path = tmp_path / "run_times.json"
    first, second = ROOT / "chapters" / "a.ipynb", ROOT / "chapters" / "b.ipynb"
    record_run_times({first: 12.34}, path)
    record_run_times({second: 70}, path)
    assert read_run_times(path) == {"chapters/a.ipynb": 12.3, "chapters/b.ipynb": 70}


def test_every_page_of_the_book_has_a_recorded_run_time():
    recorded = read_run_times()
    pages = [p.relative_to(ROOT).as_posix() for p in toc_notebooks(ROOT)]
    assert [page for page in pages if page not in recorded] == []
