"""While nbval runs the pages (`pytest --nbval chapters`), time each page and
compare it with the time the book shows for it (tools/run_times.py).

A page that now runs more than twice as slow or fast as recorded is reported at
the end of the run (a warning, not a failure: machines are noisy); with
`LLM_RECORD_RUN_TIMES=1` the measured times replace the recorded ones.
"""

import os
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from run_times import far_from, read_run_times, record_run_times  # noqa: E402

_seconds: dict[Path, float] = defaultdict(float)
_failed: set[Path] = set()


def pytest_runtest_logreport(report):
    path = Path(report.fspath)
    if path.suffix != ".ipynb":
        return
    _seconds[path.resolve()] += report.duration
    if report.failed:
        _failed.add(path.resolve())


def pytest_terminal_summary(terminalreporter):
    measured = {path: s for path, s in _seconds.items() if path not in _failed}
    if not measured:
        return
    recorded = read_run_times()
    root = Path(__file__).resolve().parent.parent
    lines = []
    for path, seconds in sorted(measured.items()):
        name = path.relative_to(root).as_posix()
        before = recorded.get(name)
        if before is None:
            lines.append(f"{name}: {seconds:.0f} s, no time recorded yet")
        elif far_from(seconds, before):
            lines.append(f"{name}: {seconds:.0f} s, the page says {before:.0f} s")
    if os.environ.get("LLM_RECORD_RUN_TIMES") == "1":
        record_run_times(measured)
        terminalreporter.write_line(f"recorded the run times of {len(measured)} pages")
    elif lines:
        terminalreporter.section("page run times far from the recorded ones")
        for line in lines:
            terminalreporter.write_line(line)
        terminalreporter.write_line(
            "re-execute these pages (tools/execute.py) or set LLM_RECORD_RUN_TIMES=1"
        )
