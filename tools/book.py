"""Small helpers shared by the book's tools: where things are, and TOC order."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TOC = ROOT / "_toc.yml"
CONFIG = ROOT / "_config.yml"


def toc_files(toc_path: Path = TOC) -> list[str]:
    """Every `file:` entry of a Jupyter Book `_toc.yml`, root first, in reading
    order."""
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(node) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []):
                    walk(child)

    walk(toc)
    return files


def toc_notebooks(root: Path = ROOT) -> list[Path]:
    """The chapter notebooks in table-of-contents order."""
    notebooks = []
    for entry in toc_files(root / "_toc.yml"):
        path = root / (entry + ".ipynb")
        if path.exists():
            notebooks.append(path)
    return notebooks


def repository_url(config_path: Path = CONFIG) -> str:
    """The repository URL, set once in `_config.yml`."""
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    return config["repository"]["url"].rstrip("/")
