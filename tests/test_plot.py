"""llm.plot: the small diagram helpers used for the book's figures."""

import matplotlib

matplotlib.use("Agg")

from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from llm.plot import COLORS, arrow, box, diagram  # noqa: E402


def test_diagram_spans_the_requested_data_units_without_axes():
    fig, ax = diagram(10, 3)
    assert ax.get_xlim() == (0, 10) and ax.get_ylim() == (0, 3) and not ax.axison
    assert tuple(fig.get_size_inches()) == (8.0, 3 * 0.8)


def test_box_is_centred_with_its_text_and_named_colour():
    fig, ax = diagram(4, 2)
    patch = box(ax, 2, 1, "tokens", width=1.6, height=0.6, color="green")
    assert isinstance(patch, FancyBboxPatch)
    assert (patch.get_x(), patch.get_y()) == (1.2, 0.7)
    assert matplotlib.colors.to_hex(patch.get_facecolor()) == COLORS["green"]
    assert [text.get_text() for text in ax.texts] == ["tokens"]


def test_arrow_draws_a_patch_and_an_optional_label():
    fig, ax = diagram(4, 2)
    arrow(ax, (0, 1), (2, 1), text="pretrain")
    arrow(ax, (2, 1), (4, 1))
    assert sum(isinstance(p, FancyArrowPatch) for p in ax.patches) == 2
    assert [text.get_text() for text in ax.texts] == ["pretrain"]
