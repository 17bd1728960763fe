"""Checks of built HTML pages, shared by the site tests and their self-test."""

import functools
import http.server
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml
from bs4 import BeautifulSoup
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "_build" / "html"
ARTIFACTS = ROOT / "_build" / "browser-artifacts"
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
]


def toc_pages() -> list[str]:
    """Every page of the table of contents, sections included, as its path in
    the built site."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))

    def files(entries: list[dict]) -> list[str]:
        found = []
        for entry in entries:
            found.append(entry["file"])
            found += files(entry.get("sections", []))
        return found

    pages = [toc["root"]]
    for part in toc.get("parts", []):
        pages += files(part.get("chapters", []))
    return [page + ".html" for page in pages]


def serve(folder: Path):
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def console_errors(driver) -> list[str]:
    """Severe messages the page logged to the browser console since the last call."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE"
    ]


def load(driver, url: str) -> None:
    driver.get(url)
    WebDriverWait(driver, 20).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )


def broken_images(driver) -> list[str]:
    """Images that did not load (zero natural width), by their src."""
    return driver.execute_script(
        "return Array.from(document.images)"
        ".filter(img => !(img.complete && img.naturalWidth > 0)).map(img => img.src)"
    )


def broken_internal_links(html_file: Path, site: Path) -> list[str]:
    """Links from one built page to files or anchors of the site that do not exist."""
    soup = BeautifulSoup(html_file.read_text(encoding="utf-8"), "html.parser")
    problems = []
    for anchor in soup.find_all("a", href=True):
        href = anchor["href"]
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or href.startswith(("mailto:", "javascript:")):
            # external
            continue
        target = (
            html_file
            if not parts.path
            else (html_file.parent / unquote(parts.path)).resolve()
        )
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file() or site.resolve() not in target.parents:
            problems.append(f"{href} (no such file)")
        elif parts.fragment and target.suffix == ".html":
            if unquote(parts.fragment) not in element_ids(target):
                problems.append(f"{href} (no such anchor)")
    return problems


@functools.cache
def element_ids(html_file: Path) -> frozenset[str]:
    """The ids of a built page's elements, the targets of its anchors. Read once
    per page: a page links to many anchors, and pages share link targets."""
    soup = BeautifulSoup(html_file.read_text(encoding="utf-8"), "html.parser")
    return frozenset(tag["id"] for tag in soup.find_all(id=True))
