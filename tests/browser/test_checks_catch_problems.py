"""The checks themselves, against a deliberately broken page: they must fail it."""

import pytest

from checks import broken_images, broken_internal_links, console_errors, load, serve

BROKEN_PAGE = """<!DOCTYPE html>
<html><head><title>Broken</title></head>
<body>
<h1>A broken page</h1>
<img src="missing-figure.png" alt="missing">
<a href="no-such-chapter.html">a dead link</a>
<a href="broken.html#no-such-section">a dead anchor</a>
<a href="https://example.org/">an external link, not checked</a>
<script>throw new Error("deliberate failure");</script>
</body></html>
"""


@pytest.fixture
def broken_site(tmp_path):
    (tmp_path / "broken.html").write_text(BROKEN_PAGE, encoding="utf-8")
    server = serve(tmp_path)
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_a_broken_page_fails_every_check(driver, broken_site):
    folder, url = broken_site
    console_errors(driver)
    load(driver, url + "broken.html")
    errors = console_errors(driver)
    assert any("deliberate failure" in error for error in errors)
    # the 404 is logged too
    assert any("missing-figure.png" in error for error in errors)
    assert [src.rsplit("/", 1)[-1] for src in broken_images(driver)] == [
        "missing-figure.png"
    ]
    assert broken_internal_links(folder / "broken.html", folder) == [
        "no-such-chapter.html (no such file)",
        "broken.html#no-such-section (no such anchor)",
    ]
