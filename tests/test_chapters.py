"""Properties every chapter notebook keeps: readable code, a summary, exercises."""

import re

import nbformat
import pytest

from conftest import ROOT

CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
HIDDEN = {"remove-cell", "remove-input", "hide-input"}
# what the book's code blocks show without a scroll bar
MAX_LINE = 88


def visible_code_cells(path):
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code" and not HIDDEN & set(cell.metadata.get("tags", [])):
            yield cell


def headings(path) -> list[str]:
    cells = nbformat.read(path, as_version=4).cells
    text = "\n".join(cell.source for cell in cells if cell.cell_type == "markdown")
    return re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.stem)
def test_code_shown_in_the_book_fits_the_page(path):
    long_lines = [
        line
        for cell in visible_code_cells(path)
        for line in cell.source.splitlines()
        if len(line) > MAX_LINE
    ]
    assert long_lines == []


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.stem)
def test_every_page_ends_with_a_summary(path):
    assert "Summary" in headings(path)


@pytest.mark.parametrize(
    "path", [p for p in CHAPTERS if p.stem.startswith("ch")], ids=lambda p: p.stem
)
def test_every_chapter_has_exercises_with_executed_hidden_solutions(path):
    assert "Exercises" in headings(path)
    sources = [cell.source for cell in nbformat.read(path, as_version=4).cells]
    starts = [i for i, source in enumerate(sources) if "{solution-start}" in source]
    assert starts, "no solutions"
    for start in starts:
        # hidden behind a toggle
        assert ":class: dropdown" in sources[start]
        cells = nbformat.read(path, as_version=4).cells
        # executed
        assert cells[start + 1].cell_type == "code" and cells[start + 1].outputs
