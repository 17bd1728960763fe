"""The built site as a reader meets it, in a real headless browser."""

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from checks import broken_images, broken_internal_links, console_errors, load, toc_pages
from run_times import MACHINE, describe_run_time, read_run_times

PAGES = toc_pages()
CHAPTERS = [page for page in PAGES if page.startswith("chapters/ch")]


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_without_console_errors_or_broken_images(driver, base_url, page):
    # forget messages of earlier pages
    console_errors(driver)
    load(driver, base_url + page)
    # the page rendered
    assert driver.find_element(By.CSS_SELECTOR, "article h1").text
    assert console_errors(driver) == []
    assert broken_images(driver) == []


@pytest.mark.parametrize("page", PAGES)
def test_internal_links_lead_to_existing_pages_and_anchors(site, page):
    assert broken_internal_links(site / page, site) == []


@pytest.mark.parametrize("page", CHAPTERS)
def test_chapters_show_code_outputs_and_figures(driver, base_url, page):
    load(driver, base_url + page)
    assert driver.find_elements(By.CSS_SELECTOR, "div.cell_output")
    figures = driver.find_elements(By.CSS_SELECTOR, "figure img")
    assert figures and all(image.get_property("naturalWidth") > 0 for image in figures)


@pytest.mark.parametrize("page", CHAPTERS)
def test_chapters_say_how_long_they_run_under_the_title(driver, base_url, page):
    seconds = read_run_times()[page.removesuffix(".html") + ".ipynb"]
    load(driver, base_url + page)
    note = driver.find_element(By.CSS_SELECTOR, "article h1 + p.run-time")
    assert note.text == f"This page runs in {describe_run_time(seconds)} on {MACHINE}."


@pytest.mark.parametrize(
    "page", ["chapters/ch03_attention.html", "chapters/ch05_pretraining.html"]
)
def test_math_is_typeset(driver, base_url, page):
    load(driver, base_url + page)
    WebDriverWait(driver, 30).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "mjx-container")
    )
    # no TeX errors
    assert not driver.find_elements(By.CSS_SELECTOR, "mjx-merror")


def test_search_box_finds_a_word_that_only_chapter_3_uses(driver, base_url, site):
    word = "bottleneck"
    pages_with_word = [
        p for p in PAGES if word in (site / p).read_text(encoding="utf-8").lower()
    ]
    assert pages_with_word == ["chapters/ch03_attention.html"]
    load(driver, base_url + "intro.html")
    button = next(
        b
        for b in driver.find_elements(By.CSS_SELECTOR, ".search-button__button")
        if b.is_displayed()
    )
    # opens the search dialog
    button.click()
    box = WebDriverWait(driver, 5).until(
        lambda d: next(
            (
                e
                for e in d.find_elements(
                    By.CSS_SELECTOR, "#pst-search-dialog input[name=q]"
                )
                if e.is_displayed()
            ),
            None,
        )
    )
    # the search page opens with the results
    box.send_keys(word, Keys.ENTER)
    results = WebDriverWait(driver, 30).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "ul.search li a")
    )
    assert [
        link.get_attribute("href").split("/")[-1].split("?")[0] for link in results
    ] == ["ch03_attention.html"]


@pytest.mark.parametrize("page", CHAPTERS)
def test_colab_button_opens_this_chapters_notebook(driver, base_url, page):
    load(driver, base_url + page)
    links = [
        a.get_attribute("href")
        for a in driver.find_elements(By.CSS_SELECTOR, "a[href*='colab']")
    ]
    notebook = page.removesuffix(".html") + ".ipynb"
    assert links and all(link.endswith(f"/blob/main/{notebook}") for link in links), (
        links
    )


def test_dark_mode_switches(driver, base_url):
    """The theme button cycles through light, auto (here: light) and dark."""
    load(driver, base_url + "intro.html")

    def click_until(theme: str) -> bool:
        for _ in range(3):
            driver.execute_script(
                "document.querySelector('.theme-switch-button').click()"
            )
            if (
                driver.find_element(By.TAG_NAME, "html").get_attribute("data-theme")
                == theme
            ):
                return True
        return False

    assert (
        driver.find_element(By.TAG_NAME, "html").get_attribute("data-theme") == "light"
    )
    assert click_until("dark")
    background = driver.execute_script(
        "return getComputedStyle(document.body).backgroundColor"
    )
    assert click_until("light")
    assert (
        driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        != background
    )


def test_screenshots_of_home_and_a_chapter(driver, base_url, artifacts):
    for page, name in [
        ("intro.html", "home.png"),
        ("chapters/ch03_attention.html", "chapter.png"),
    ]:
        load(driver, base_url + page)
        assert driver.save_screenshot(str(artifacts / name))
        assert (artifacts / name).stat().st_size > 10_000
