"""The server's chat page in headless Chromium: type a message, watch the reply
stream in, and no console errors. A small random model with the GPT-2
vocabulary stands in for the book's, slowed down so the streaming shows."""

import itertools
import json
import time
import urllib.request

import pytest
import torch
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from llm.model import GPTConfig, GPTModel
from llm.server import create_app, running_server

from checks import console_errors, load

CONFIG = GPTConfig(
    vocab_size=50257,
    context_length=128,
    emb_dim=32,
    n_heads=2,
    n_layers=2,
    drop_rate=0.0,
)


def slow_model() -> GPTModel:
    """A random model whose every token takes 20 ms more."""
    torch.manual_seed(0)
    model = GPTModel(CONFIG).eval()
    model.out_head.register_forward_hook(lambda *args: time.sleep(0.02))
    return model


@pytest.fixture(scope="module")
def chat_url():
    app = create_app(models={"book-instruct": slow_model})
    with running_server(app) as url:
        yield url


def api_reply(url: str, messages: list[dict]) -> str:
    """The whole reply the API gives, with the page's settings."""
    body = {"model": "book-instruct", "messages": messages, "temperature": 0}
    request = urllib.request.Request(
        url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as answer:
        return json.loads(answer.read())["choices"][0]["message"]["content"]


def test_a_message_typed_on_the_chat_page_gets_a_streamed_reply(driver, chat_url):
    load(driver, chat_url + "/")
    # start from a clean log
    console_errors(driver)
    WebDriverWait(driver, 20).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#model option")
    )
    driver.find_element(By.ID, "message").send_keys("Name a primary colour.")
    driver.find_element(By.ID, "send").click()
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = driver.execute_script(
            "const r = document.querySelector('.assistant');"
            "return r ? r.textContent : null;"
        )
        if text and text not in seen:
            seen.append(text)
        if not driver.find_element(By.ID, "send").get_property("disabled") and seen:
            break
        time.sleep(0.02)
    user = driver.find_element(By.CSS_SELECTOR, ".user").text
    assert user == "Name a primary colour."
    expected = api_reply(chat_url, [{"role": "user", "content": user}])
    assert seen and seen[-1] == expected
    # the reply grew piece by piece: streamed, not delivered at the end
    assert len(seen) >= 3
    pairs = itertools.pairwise(seen)
    assert all(later.startswith(earlier) for earlier, later in pairs)
    assert console_errors(driver) == []
