#!/usr/bin/env python
"""Re-execute chapter notebooks top to bottom, save their outputs, and clean them.

    python tools/execute.py                              # every notebook in _toc.yml
    python tools/execute.py chapters/ch02_text_data.ipynb

Each notebook runs in a fresh `python3` kernel with its own folder as the
working directory, so it sees exactly what a reader's run would see. Set
`LLM_DATA_DIR` to a data mirror to run offline. The time each one took is
recorded in chapters/run_times.json, from which every page shows how long it
runs (`_ext/run_time.py`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from book import ROOT, toc_notebooks  # noqa: E402
from nbclean import clean, serialize  # noqa: E402
from run_times import record_run_time  # noqa: E402


def execute(path: Path, timeout: int = 1200) -> float:
    """Execute one notebook in place; return the seconds it took."""
    nb = clean(nbformat.read(path, as_version=4))
    start = time.perf_counter()
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute()
    except CellExecutionError:
        # for inspection; git ignores it
        failed = path.with_suffix(".failed.ipynb")
        failed.write_text(serialize(nb), encoding="utf-8")
        print(f"  the cells executed so far, with their outputs, are in {failed}")
        raise
    seconds = time.perf_counter() - start
    path.write_text(serialize(clean(nb)), encoding="utf-8")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "notebooks", nargs="*", type=Path, help="default: every notebook in _toc.yml"
    )
    parser.add_argument(
        "--timeout", type=int, default=1200, help="seconds allowed per cell"
    )
    args = parser.parse_args(argv)
    for path in args.notebooks or toc_notebooks(ROOT):
        print(f"executing {path} ...", flush=True)
        seconds = execute(path.resolve(), args.timeout)
        record_run_time(path.resolve(), seconds)
        print(f"  done in {seconds:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
