"""How long each page takes to run, measured, kept in chapters/run_times.json.

`tools/execute.py` records a page's time whenever it executes the page; the
notebook checks (`pytest --nbval chapters`) compare each page's time with the
recorded one and report pages that have become much slower or faster, and
record them when `LLM_RECORD_RUN_TIMES=1` is set. The book shows the recorded
time at the top of each page (`_ext/run_time.py`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from book import ROOT

RUN_TIMES = ROOT / "chapters" / "run_times.json"
# the machine the recorded times come from, as the pages name it
MACHINE = "a 2-core CPU"


def read_run_times(path: Path = RUN_TIMES) -> dict[str, float]:
    """{notebook path relative to the repository: seconds}, empty if none yet."""
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def record_run_times(seconds_by_notebook: dict[Path, float], path: Path = RUN_TIMES):
    """Store the measured seconds of some notebooks, keeping the others'."""
    times = read_run_times(path)
    for notebook, seconds in seconds_by_notebook.items():
        times[notebook.resolve().relative_to(ROOT).as_posix()] = round(seconds, 1)
    text = json.dumps(dict(sorted(times.items())), indent=1) + "\n"
    path.write_text(text, encoding="utf-8")


def record_run_time(notebook: Path, seconds: float, path: Path = RUN_TIMES) -> None:
    record_run_times({notebook: seconds}, path)


def describe_run_time(seconds: float) -> str:
    """The phrase a page shows: "under a minute", "about 1 minute", "about 13
    minutes" (whole minutes, rounded up from 30 s)."""
    if seconds < 60:
        return "under a minute"
    minutes = math.floor(seconds / 60 + 0.5)
    return f"about {minutes} minute" + ("s" if minutes > 1 else "")


def far_from(measured: float, recorded: float, factor: float = 2.0) -> bool:
    """A loose check: more than `factor` times slower or faster than recorded,
    ignoring differences under a minute (start-up costs, a busy machine)."""
    if abs(measured - recorded) < 60:
        return False
    return measured > factor * recorded or measured < recorded / factor
