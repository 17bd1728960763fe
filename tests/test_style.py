"""tools/comments.py: comments sit on their own line, above the code they explain."""

import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
from comments import end_of_line_comments, files_under, move_comments, python_sources  # noqa: E402


def test_the_package_tools_benchmarks_and_tests_have_no_end_of_line_comments():
    folders = [ROOT / name for name in ("llm", "tools", "bench", "tests")]
    found = [
        f"{label}, line {row}"
        for path in files_under(folders)
        for label, source in python_sources(path)
        for row, _, _ in end_of_line_comments(source)
    ]
    assert found == []


@pytest.mark.parametrize(
    "before, after",
    [
        ("x = f(y)  # why\n", "# why\nx = f(y)\n"),
        ("z = g(\n    a,\n)  # wrapped\n", "# wrapped\nz = g(\n    a,\n)\n"),
        ("z = [\n    a,  # first\n]\n", "z = [\n    # first\n    a,\n]\n"),
        ("if x:\n    y = 1  # one\n", "if x:\n    # one\n    y = 1\n"),
        ('w = "# text"\n', 'w = "# text"\n'),
        ("y = 1  # noqa: E501\n", "y = 1  # noqa: E501\n"),
    ],
)
def test_move_comments_puts_each_comment_above_its_code(before, after):
    assert move_comments(before) == after
    assert end_of_line_comments(after) == [] or "noqa" in after
