"""The package is layered like the book: a chapter's exported code imports only
modules that the same chapter or an earlier one (in `_toc.yml` order) creates."""

import ast
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
from book import toc_notebooks  # noqa: E402
from tangle import exported_cells  # noqa: E402


def imported_llm_modules(code: str) -> set[str]:
    """The `llm.*` modules that `code` imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(name for name in names if name.startswith("llm."))
    return found


def chapters_and_exports(root=ROOT) -> list[tuple[str, list[tuple[str, str]]]]:
    """(chapter, [(module, code), ...]) for every notebook, in reading order."""
    return [
        (path.relative_to(root).as_posix(), exported_cells(path, root))
        for path in toc_notebooks(root)
    ]


def layering_violations(chapters) -> list[str]:
    """Imports of a module that no earlier-or-same chapter has created yet."""
    created: dict[str, int] = {}
    for index, (_, cells) in enumerate(chapters):
        for module, _ in cells:
            created.setdefault(module, index)
    problems = []
    for index, (chapter, cells) in enumerate(chapters):
        for module, code in cells:
            for imported in sorted(imported_llm_modules(code)):
                if imported not in created:
                    problems.append(
                        f"{chapter}: {module} imports {imported}, "
                        "which no chapter creates"
                    )
                elif created[imported] > index:
                    later = chapters[created[imported]][0]
                    problems.append(
                        f"{chapter}: {module} imports {imported}, "
                        f"which the later page {later} creates"
                    )
    return problems


def test_no_chapter_imports_a_module_that_a_later_chapter_creates():
    assert layering_violations(chapters_and_exports()) == []


def test_the_check_catches_an_import_from_a_later_chapter():
    chapters = [
        ("ch01.ipynb", [("llm.early", "from llm.late import thing\n")]),
        ("ch02.ipynb", [("llm.late", "thing = 1\n")]),
    ]
    assert layering_violations(chapters) == [
        "ch01.ipynb: llm.early imports llm.late, "
        "which the later page ch02.ipynb creates"
    ]


@pytest.mark.parametrize(
    "code, expected",
    [
        ("import llm.model\n", {"llm.model"}),
        ("from llm.model import GPTModel\n", {"llm.model"}),
        ("def f():\n    from llm.checkpoint import x\n", {"llm.checkpoint"}),
        ("import torch\nfrom . import sibling\n", set()),
    ],
)
def test_imports_are_found_at_any_depth(code, expected):
    assert imported_llm_modules(code) == expected
