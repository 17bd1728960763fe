"""Sphinx extension: serve MathJax from the built site instead of a CDN.

The book then renders its formulas without network access: when read from a
downloaded copy, and in the browser tests, which run offline. The files come
from the Python package `django-static-mathjax` (MathJax 3, Apache-2.0), which
ships MathJax's browser build as package data; only the parts that the
`tex-mml-chtml` component loads are copied.
"""

import shutil
from pathlib import Path

ENTRY = "tex-mml-chtml.js"
PARTS = [ENTRY, "input", "output", "ui", "a11y", "adaptors", "sre"]


def stage_mathjax(app, config) -> None:
    import mathjax  # the django-static-mathjax package; it does not need Django

    source = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    staging = Path(app.outdir).parent / "mathjax-static"  # _build/mathjax-static
    target = staging / "mathjax"
    if not (target / ENTRY).is_file():
        target.mkdir(parents=True, exist_ok=True)
        for part in PARTS:
            if (source / part).is_dir():
                shutil.copytree(source / part, target / part, dirs_exist_ok=True)
            else:
                shutil.copy2(source / part, target / part)
    config.html_static_path.append(str(staging))
    config.mathjax_path = f"mathjax/{ENTRY}"


def setup(app):
    app.connect("config-inited", stage_mathjax)
    return {"parallel_read_safe": True}
