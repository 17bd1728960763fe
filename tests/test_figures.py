"""Chapters 2 to 5 show their ideas in pictures: at least eight figures each.

A figure is an image that a code cell produced (a PNG or SVG output, the
matplotlib figures of the chapters) or a `{figure}` directive in a markdown
cell."""

import re

import nbformat
import pytest

from conftest import ROOT

MIN_FIGURES = 8
CHAPTERS = ["ch02_text_data", "ch03_attention", "ch04_gpt_model", "ch05_pretraining"]
IMAGE_TYPES = ("image/png", "image/svg+xml")
FIGURE_DIRECTIVE = re.compile(r"^\s*(```+|:::+)\s*\{figure\}", re.MULTILINE)


def count_figures(notebook) -> int:
    """Image outputs of code cells plus `{figure}` directives in markdown."""
    count = 0
    for cell in notebook.cells:
        if cell.cell_type == "code":
            for output in cell.get("outputs", []):
                data = output.get("data", {})
                count += any(kind in data for kind in IMAGE_TYPES)
        elif cell.cell_type == "markdown":
            count += len(FIGURE_DIRECTIVE.findall(cell.source))
    return count


def test_count_figures_counts_images_and_directives():
    notebook = nbformat.v4.new_notebook()
    image = nbformat.v4.new_output(
        "display_data", data={"image/png": "", "text/plain": "<Figure>"}
    )
    text = nbformat.v4.new_output("stream", text="no picture")
    plot = nbformat.v4.new_code_cell("plot()")
    plot.outputs = [image, text]
    notebook.cells = [
        plot,
        nbformat.v4.new_code_cell("print(1)"),
        nbformat.v4.new_markdown_cell("```{figure} a.png\n:name: fig-a\n```"),
        nbformat.v4.new_markdown_cell("A {numref}`fig-a` reference is no figure."),
    ]
    assert count_figures(notebook) == 2


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_has_enough_figures(chapter):
    path = ROOT / "chapters" / f"{chapter}.ipynb"
    count = count_figures(nbformat.read(path, as_version=4))
    assert count >= MIN_FIGURES, (
        f"chapters/{chapter}.ipynb has {count} figures (image outputs of code cells "
        f"plus {{figure}} directives); it needs at least {MIN_FIGURES}"
    )
