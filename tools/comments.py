#!/usr/bin/env python
"""Keep comments on their own line, above the code they explain.

An end-of-line comment (`x = f(y)  # why`) is moved to its own line above the
statement, with the statement's indentation; when the formatter has wrapped a
statement so that its comment sits after a closing bracket (`)  # why`), the
comment goes above the whole statement. Pragmas (`# noqa`, `# type:`) stay.
In notebooks only the exported cells (the package's code) are checked: a
teaching cell may end a line such as `print(x.shape)` with the shape it prints.

    python tools/comments.py --check llm tools bench tests   # exit 1 and list them
    python tools/comments.py --fix FILE_OR_FOLDER ...         # rewrite .py and .ipynb
"""

from __future__ import annotations

import argparse
import io
import sys
import tokenize
from pathlib import Path

import nbformat

PRAGMAS = ("# noqa", "# type:", "# pragma", "# fmt:")
CLOSING = (")", "]", "}")


def end_of_line_comments(source: str) -> list[tuple[int, int, int]]:
    """(comment line, comment column, first line of its statement), 1-based lines,
    for every comment that follows code on the same line."""
    found = []
    statement_start = None
    last_code_line = 0
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return []
    skip = {tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    for token in tokens:
        kind, text, (row, column), _, _ = token
        if kind == tokenize.COMMENT:
            if last_code_line == row and not text.startswith(PRAGMAS):
                found.append((row, column, statement_start or row))
            continue
        if kind in skip or kind == tokenize.ENDMARKER:
            if kind == tokenize.NEWLINE:
                statement_start = None
            continue
        if statement_start is None:
            statement_start = row
        last_code_line = token.end[0]
    return found


def move_comments(source: str) -> str:
    """`source` with every end-of-line comment moved to its own line."""
    comments = end_of_line_comments(source)
    if not comments:
        return source
    lines = source.splitlines(keepends=True)
    insert: dict[int, list[str]] = {}
    for row, column, start in comments:
        line = lines[row - 1]
        comment = line[column:].rstrip("\n")
        lines[row - 1] = line[:column].rstrip() + "\n"
        code = line[:column].strip()
        # After a wrapped statement's closing bracket, or on a statement's first
        # line, the comment explains the statement; inside brackets, its line.
        target = start if code.startswith(CLOSING) or row == start else row
        indent = lines[target - 1][
            : len(lines[target - 1]) - len(lines[target - 1].lstrip())
        ]
        insert.setdefault(target, []).append(indent + comment + "\n")
    result = []
    for number, line in enumerate(lines, start=1):
        result.extend(insert.get(number, []))
        result.append(line)
    text = "".join(result)
    return text if source.endswith("\n") else text.rstrip("\n")


def python_sources(path: Path) -> list[tuple[str, str]]:
    """(label, source) for a .py file or each code cell of a notebook."""
    if path.suffix == ".py":
        return [(str(path), path.read_text(encoding="utf-8"))]
    nb = nbformat.read(path, as_version=4)
    return [
        (f"{path}, cell {index}", cell.source)
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and cell.source.startswith("#| export")
    ]


def fix(path: Path) -> bool:
    """Rewrite `path` in place; return whether it changed."""
    if path.suffix == ".py":
        old = path.read_text(encoding="utf-8")
        new = move_comments(old)
        if new != old:
            path.write_text(new, encoding="utf-8")
        return new != old
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.startswith("#| export"):
            new = move_comments(cell.source)
            changed |= new != cell.source
            cell.source = new
    if changed:
        nbformat.write(nb, path)
    return changed


def files_under(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*.py") if "__pycache__" not in p.parts
            )
            found += sorted(path.rglob("*.ipynb"))
        else:
            found.append(path)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true")
    mode.add_argument("--fix", action="store_true")
    args = parser.parse_args(argv)
    if args.fix:
        for path in files_under(args.paths):
            if fix(path):
                print(f"moved comments in {path}")
        return 0
    problems = [
        f"{label}, line {row}: comment after code; put it on its own line above"
        for path in files_under(args.paths)
        for label, source in python_sources(path)
        for row, _, _ in end_of_line_comments(source)
    ]
    print("\n".join(problems) or "every comment is on its own line")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
