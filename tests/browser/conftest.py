"""Browser tests of the built book: headless Debian Chromium driven by Selenium.

They need `make book` to have built `_build/html`, and Chromium and ChromeDriver
from Debian's packages (`chromium`, `chromium-driver`); no browser is downloaded.
"""

import shutil
import sys
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from checks import ARTIFACTS, CHROMIUM_FLAGS, SITE, serve

# the book's tools (run_times) for the tests that compare pages with them
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))


@pytest.fixture(scope="session")
def site():
    if not (SITE / "intro.html").is_file():
        pytest.fail(
            "build the book first (make book): _build/html/intro.html is missing"
        )
    return SITE


@pytest.fixture(scope="session")
def base_url(site):
    server = serve(site)
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture(scope="session")
def driver(tmp_path_factory):
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.fail(
            "install Debian's chromium and chromium-driver packages for the "
            "browser tests"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(
        options=options, service=Service(executable_path=chromedriver)
    )
    yield browser
    browser.quit()


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
