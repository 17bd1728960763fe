"""Sphinx extension: under each page's title, how long the page takes to run.

The times are measured when the pages are executed (tools/execute.py, or the
notebook checks with LLM_RECORD_RUN_TIMES=1) and kept in chapters/run_times.json.
"""

import sys
from pathlib import Path

from docutils import nodes

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from run_times import MACHINE, RUN_TIMES, describe_run_time, read_run_times  # noqa: E402


def add_run_time(app, doctree) -> None:
    # rebuild the page when the recorded times change (a first one included)
    app.env.note_dependency(str(RUN_TIMES))
    seconds = read_run_times().get(f"{app.env.docname}.ipynb")
    if seconds is None:
        return
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None:
        return
    text = f"This page runs in {describe_run_time(seconds)} on {MACHINE}."
    note = nodes.paragraph("", "", nodes.emphasis(text, text), classes=["run-time"])
    title = next(iter(section.findall(nodes.title)))
    section.insert(section.index(title) + 1, note)


def setup(app):
    app.connect("doctree-read", add_run_time)
    return {"parallel_read_safe": True}
