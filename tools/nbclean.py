#!/usr/bin/env python
"""Keep the chapter notebooks tidy, stable under version control, and executed.

What it does to every notebook in the table of contents (or the ones named):

* notebook metadata is reduced to a fixed `python3` kernelspec and language;
* cell metadata keeps only `tags` (sorted) and `mystnb` (figure captions);
* trailing blank lines of cells are dropped, empty code cells removed;
* the first code cell is the Colab install cell derived from `_config.yml`;
* outputs and execution counts are kept exactly as they are.

With `--check` it changes nothing and exits 1 if a notebook would change, has a
code cell that was not executed, has execution counts that are not 1, 2, 3, ...
(one fresh run, top to bottom), or shows an error its tags do not allow. Cells
tagged `skip-execution` (they need the network) are the exception: they must
have no outputs, and are left out of the count.

    python tools/nbclean.py            # clean in place
    python tools/nbclean.py --check    # for CI
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from book import ROOT, repository_url, toc_notebooks  # noqa: E402

DISTRIBUTION = "llm-from-scratch-book"
KERNELSPEC = {
    "display_name": "Python 3 (ipykernel)",
    "language": "python",
    "name": "python3",
}
KEPT_CELL_METADATA = ("tags", "mystnb")
INSTALL_MARKER = "# Colab only: install the book's package"
INSTALL_TAGS = ["remove-cell"]
ERROR_TAGS = {"raises-exception", "nbval-raises-exception"}
# never executed here (needs the network); nbval skips it too
SKIP_TAG = "skip-execution"


def install_cell_source(root: Path = ROOT) -> str:
    """The first code cell of every chapter: a no-op outside Google Colab."""
    requirement = f"{DISTRIBUTION}[book] @ git+{repository_url(root / '_config.yml')}"
    return (
        f"{INSTALL_MARKER} (Colab's own torch is kept).\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        "    import subprocess\n"
        "\n"
        f'    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "{requirement}"], check=True)'  # noqa: E501
    )


def clean(nb: nbformat.NotebookNode, root: Path = ROOT) -> nbformat.NotebookNode:
    """Return a cleaned copy of a notebook (outputs and execution counts untouched)."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    nb.nbformat, nb.nbformat_minor = 4, 5
    nb.metadata = nbformat.from_dict(
        {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    )

    cells = []
    for cell in nb.cells:
        cell.source = cell.source.rstrip()
        if cell.cell_type == "code" and not cell.source:
            continue
        metadata = {
            key: cell.metadata[key]
            for key in KEPT_CELL_METADATA
            if key in cell.metadata
        }
        if "tags" in metadata:
            metadata["tags"] = sorted(set(metadata["tags"]))
            if not metadata["tags"]:
                del metadata["tags"]
        cell.metadata = nbformat.from_dict(metadata)
        cells.append(cell)

    install = install_cell_source(root)
    code_cells = [cell for cell in cells if cell.cell_type == "code"]
    if code_cells and code_cells[0].source.startswith(INSTALL_MARKER):
        first = code_cells[0]
        if first.source != install:
            first.source, first.execution_count, first.outputs = install, None, []
        first.metadata["tags"] = INSTALL_TAGS
    else:
        new = nbformat.v4.new_code_cell(install, metadata={"tags": INSTALL_TAGS})
        position = next(
            (i for i, cell in enumerate(cells) if cell.cell_type == "code"), len(cells)
        )
        cells.insert(position, new)
    nb.cells = cells
    # give any cell without an id one (nbformat 4.5)
    for cell in nb.cells:
        cell.setdefault("id", nbformat.v4.new_code_cell().id)
    return nb


def execution_problems(nb: nbformat.NotebookNode) -> list[str]:
    """Why a notebook does not look like one fresh top-to-bottom run."""
    problems = []
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    for cell in [c for c in code_cells if SKIP_TAG in c.metadata.get("tags", [])]:
        if cell.execution_count is not None or cell.outputs:
            problems.append(f"a cell tagged {SKIP_TAG} has outputs: clear them")
    code_cells = [c for c in code_cells if SKIP_TAG not in c.metadata.get("tags", [])]
    for number, cell in enumerate(code_cells, start=1):
        first_line = cell.source.splitlines()[0] if cell.source else ""
        if cell.execution_count is None:
            problems.append(f"code cell {number} ({first_line!r}) was not executed")
        elif cell.execution_count != number:
            problems.append(
                f"code cell {number} ({first_line!r}) has execution count "
                f"{cell.execution_count}, "
                f"expected {number}: re-execute the notebook top to bottom"
            )
        has_error = any(output.output_type == "error" for output in cell.outputs)
        if has_error and not ERROR_TAGS & set(cell.metadata.get("tags", [])):
            problems.append(f"code cell {number} ({first_line!r}) shows an error")
    return problems


def serialize(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "notebooks", nargs="*", type=Path, help="default: every notebook in _toc.yml"
    )
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 on any problem"
    )
    args = parser.parse_args(argv)

    notebooks = args.notebooks or toc_notebooks(ROOT)
    failed = False
    for path in notebooks:
        text = path.read_text(encoding="utf-8")
        cleaned = clean(nbformat.reads(text, as_version=4))
        new_text = serialize(cleaned)
        problems = execution_problems(cleaned)
        if args.check:
            if new_text != text:
                problems.insert(0, "not clean: run `python tools/nbclean.py`")
        elif new_text != text:
            path.write_text(new_text, encoding="utf-8")
            print(f"cleaned {path}")
        if args.check:
            for problem in problems:
                print(f"{path}: {problem}", file=sys.stderr)
            failed |= bool(problems)
    if args.check and not failed:
        print(f"{len(notebooks)} notebooks are clean and fully executed.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
