"""The OpenAI-compatible server, started on a free localhost port and asked with
the official `openai` client: its text is `llm.generate.generate`'s, bad
requests get OpenAI-style 4xx errors, and many concurrent clients each get
their own tokens. A small random model with the GPT-2 vocabulary stands in for
the book's models, so that the tests need no trained checkpoint."""

import copy
import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest
import torch

from llm.chat import CHAT_STOP, chat_prompt, fit_messages
from llm.generate import generate
from llm.instruct import JudgeError, JudgeUnavailableError, judge_score
from llm.model import GPTConfig, GPTModel
from llm.server import MODELS, create_app, running_server
from llm.tokenizer import gpt2_tokenizer

# the book model's vocabulary and context, far fewer weights
CONFIG = GPTConfig(
    vocab_size=50257,
    context_length=128,
    emb_dim=32,
    n_heads=2,
    n_layers=2,
    drop_rate=0.0,
)
SLOW_MAX_TOKENS = 120


def random_model(seed: int) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(CONFIG).eval()


@pytest.fixture(scope="module")
def reference():
    """The models' twins, for `generate` (never shared with the server thread)."""
    return {"book-instruct": random_model(0), "book-base": random_model(1)}


@pytest.fixture(scope="module")
def server(reference):
    """(base URL, app) of a server whose models are copies of `reference`, plus
    "slow", whose every token takes 10 ms more (for the disconnect test)."""
    if not os.environ.get("LLM_DATA_DIR"):
        pytest.fail("set LLM_DATA_DIR to the data mirror (the GPT-2 tokenizer)")
    slow = random_model(2)
    slow.out_head.register_forward_hook(lambda *args: time.sleep(0.01))
    models = {
        name: (lambda m=model: copy.deepcopy(m)) for name, model in reference.items()
    }
    models["slow"] = lambda: slow
    app = create_app(models=models, max_batch=8)
    with running_server(app) as url:
        yield url, app


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def tokenizer():
    return gpt2_tokenizer()


def solo_text(model, tokenizer, prompt: str, max_tokens: int, stops=(), **options):
    """What `generate` makes of `prompt`, decoded, cut at end-of-text and at
    the first stop string, with the number of tokens it generated."""
    ids = tokenizer.encode_ordinary(prompt)
    out = generate(
        model, torch.tensor([ids]), max_tokens, eos_id=tokenizer.eot_token, **options
    )
    new = out[0, len(ids) :].tolist()
    if tokenizer.eot_token in new:
        new = new[: new.index(tokenizer.eot_token)]
    text = tokenizer.decode(new)
    cuts = [text.find(stop) for stop in stops if stop in text]
    return (text[: min(cuts)] if cuts else text), len(new)


def open_stream(url: str, path: str, body: dict) -> http.client.HTTPConnection:
    """A POST of `body` to `path` whose response is left to be read."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Content-Type": "application/json"}
    connection.request("POST", path, json.dumps(body), headers)
    return connection


def stats(url: str) -> dict:
    with urllib.request.urlopen(url + "/stats") as answer:
        return json.loads(answer.read())


def test_models_lists_the_models_the_server_offers(client):
    assert [model.id for model in client.models.list()] == [
        "book-instruct",
        "book-base",
        "slow",
    ]
    assert list(MODELS) == ["book-instruct", "book-base"]


@pytest.mark.parametrize("name", ["book-instruct", "book-base"])
def test_a_greedy_completion_is_the_text_generate_gives(
    client, reference, tokenizer, name
):
    prompt = "Every effort moves you"
    answer = client.completions.create(
        model=name, prompt=prompt, max_tokens=12, temperature=0
    )
    text, count = solo_text(reference[name], tokenizer, prompt, 12)
    assert answer.choices[0].text == text
    assert answer.choices[0].finish_reason == "length"
    assert answer.object == "text_completion" and answer.model == name
    prompt_tokens = len(tokenizer.encode_ordinary(prompt))
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (
        prompt_tokens,
        count,
    )
    assert answer.usage.total_tokens == prompt_tokens + count


def test_a_chat_completion_answers_the_chat_template_prompt(
    client, reference, tokenizer
):
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Name a primary colour."},
    ]
    answer = client.chat.completions.create(
        model="book-instruct", messages=messages, max_tokens=10, temperature=0
    )
    text, _ = solo_text(
        reference["book-instruct"], tokenizer, chat_prompt(messages), 10, CHAT_STOP
    )
    message = answer.choices[0].message
    assert (message.role, message.content) == ("assistant", text)
    assert answer.object == "chat.completion"


def test_a_long_chat_drops_its_oldest_turns_whole(client, reference, tokenizer):
    turns = [
        message
        for i in range(8)
        for message in (
            {"role": "user", "content": f"Question {i}: " + "why " * 10},
            {"role": "assistant", "content": "Because. " * 10},
        )
    ]
    messages = [*turns, {"role": "user", "content": "Last question?"}]
    room = reference["book-instruct"].cfg.context_length - 8
    ids, dropped = fit_messages(messages, tokenizer, room)
    assert dropped > 0
    answer = client.chat.completions.create(
        model="book-instruct", messages=messages, max_tokens=8, temperature=0
    )
    assert answer.usage.prompt_tokens == len(ids)
    text, _ = solo_text(
        reference["book-instruct"],
        tokenizer,
        chat_prompt(messages[dropped:]),
        8,
        CHAT_STOP,
    )
    assert answer.choices[0].message.content == text


def test_streamed_chunks_join_to_the_whole_text(client, reference, tokenizer):
    prompt = "It was a dark and stormy night"
    stream = client.completions.create(
        model="book-base", prompt=prompt, max_tokens=15, temperature=0, stream=True
    )
    chunks = list(stream)
    text, _ = solo_text(reference["book-base"], tokenizer, prompt, 15)
    assert len(chunks) > 2
    assert "".join(chunk.choices[0].text for chunk in chunks) == text
    assert [c.choices[0].finish_reason for c in chunks][-1] == "length"


def test_a_streamed_chat_sends_the_role_then_the_text_then_usage(
    client, reference, tokenizer
):
    messages = [{"role": "user", "content": "Say hello."}]
    stream = client.chat.completions.create(
        model="book-instruct",
        messages=messages,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text, count = solo_text(
        reference["book-instruct"], tokenizer, chat_prompt(messages), 8, CHAT_STOP
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == count


def test_the_stream_is_server_sent_events_ending_with_done(server):
    body = {
        "model": "book-base",
        "prompt": "Hello",
        "max_tokens": 4,
        "stream": True,
        "temperature": 0,
    }
    connection = open_stream(server[0], "/v1/completions", body)
    answer = connection.getresponse()
    assert answer.getheader("content-type").startswith("text/event-stream")
    raw = answer.read().decode()
    connection.close()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    for event in events[:-2]:
        assert event.startswith("data: ")
        assert json.loads(event[6:])["object"] == "text_completion"


def test_a_seed_makes_sampling_reproducible_and_equal_to_generate(
    client, reference, tokenizer
):
    prompt = "The sea was"
    options = {"temperature": 1.0, "top_p": 0.9, "max_tokens": 12}
    first, second, other = (
        client.completions.create(
            model="book-base", prompt=prompt, seed=seed, **options
        )
        .choices[0]
        .text
        for seed in (7, 7, 8)
    )
    text, _ = solo_text(
        reference["book-base"],
        tokenizer,
        prompt,
        12,
        temperature=1.0,
        top_p=0.9,
        generator=torch.Generator().manual_seed(7),
    )
    assert first == second == text
    assert other != first


def test_a_stop_string_cuts_the_text_before_it(client, reference, tokenizer):
    prompt = "Once upon a time"
    whole, _ = solo_text(reference["book-base"], tokenizer, prompt, 20)
    stop = whole[len(whole) // 2 : len(whole) // 2 + 3]
    answer = client.completions.create(
        model="book-base", prompt=prompt, max_tokens=20, temperature=0, stop=[stop]
    )
    assert answer.choices[0].text == whole[: whole.find(stop)]
    assert answer.choices[0].finish_reason == "stop"


def post(url: str, path: str, data: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(
        url + path, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


BAD_REQUESTS = {
    "malformed JSON": (
        "/v1/completions",
        b'{"model": "book-base", "prompt": ',
        400,
        None,
    ),
    "unknown model": (
        "/v1/completions",
        {"model": "gpt-9", "prompt": "Hi"},
        404,
        "model",
    ),
    "max_tokens beyond the context": (
        "/v1/completions",
        {"model": "book-base", "prompt": "Hi", "max_tokens": 128},
        400,
        "max_tokens",
    ),
    "negative temperature": (
        "/v1/completions",
        {"model": "book-base", "prompt": "Hi", "temperature": -0.5},
        400,
        "temperature",
    ),
    "empty prompt": (
        "/v1/completions",
        {"model": "book-base", "prompt": ""},
        400,
        "prompt",
    ),
    "missing prompt": ("/v1/completions", {"model": "book-base"}, 400, "prompt"),
    "n above 1": (
        "/v1/completions",
        {"model": "book-base", "prompt": "Hi", "n": 2},
        400,
        "n",
    ),
    "missing messages": (
        "/v1/chat/completions",
        {"model": "book-instruct"},
        400,
        "messages",
    ),
    "no user message": (
        "/v1/chat/completions",
        {"model": "book-instruct", "messages": [{"role": "system", "content": "Hi"}]},
        400,
        "messages",
    ),
    "unknown role": (
        "/v1/chat/completions",
        {"model": "book-instruct", "messages": [{"role": "robot", "content": "Hi"}]},
        400,
        "messages",
    ),
    "empty stop string": (
        "/v1/completions",
        {"model": "book-base", "prompt": "Hi", "stop": [""]},
        400,
        "stop",
    ),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_a_bad_request_gets_a_4xx_with_an_openai_error_body(server, case):
    path, body, status, param = BAD_REQUESTS[case]
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    code, answer = post(server[0], path, data)
    assert code == status
    assert set(answer) == {"error"}
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param


def test_the_openai_client_raises_its_own_errors_for_them(client):
    with pytest.raises(openai.NotFoundError, match="gpt-9"):
        client.completions.create(model="gpt-9", prompt="Hi")
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model="book-base", prompt="Hi", temperature=-1)


def test_a_client_that_disconnects_mid_stream_frees_its_slot(server):
    url = server[0]
    body = {
        "model": "slow",
        "prompt": "Hello",
        "max_tokens": SLOW_MAX_TOKENS,
        "temperature": 0,
        "stream": True,
    }
    connection = open_stream(url, "/v1/completions", body)
    answer = connection.getresponse()
    assert answer.readline().startswith(b"data: ")
    assert stats(url)["slow"]["running"] == 1
    connection.close()
    # the connection is closed: the scheduler must drop the request
    deadline = time.monotonic() + 20
    while stats(url)["slow"]["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    slow = stats(url)["slow"]
    assert (slow["running"], slow["cancelled"], slow["finished"]) == (0, 1, 0)
    assert slow["tokens"] < SLOW_MAX_TOKENS


def test_chapter_7s_judge_reaches_this_server(server):
    url = server[0]
    # the model is loaded when first asked for; before that it has no stats
    before = stats(url).get("book-instruct", {}).get("finished", 0)
    entry = {"instruction": "Name a primary colour.", "input": "", "output": "Red."}
    # the random model does not reply with a lone number; whatever it says, the
    # request must arrive and come back as a chat completion
    try:
        score = judge_score(entry, "Blue.", url=url + "/v1", model="book-instruct")
    except JudgeUnavailableError as error:
        pytest.fail(f"the judge could not be asked: {error}")
    except JudgeError as error:
        # an unusable reply, not a malformed answer ("not a chat completion")
        assert "the judge's reply" in str(error)
    else:
        assert 0 <= score <= 100
    assert stats(url)["book-instruct"]["finished"] == before + 1


def test_sixteen_concurrent_streaming_clients_each_get_their_solo_text(
    client, reference, tokenizer
):
    prompts = [f"Request number {i} says" + " and" * (i % 5) for i in range(16)]
    expected = [solo_text(reference["book-base"], tokenizer, p, 16)[0] for p in prompts]
    results: dict[int, str] = {}

    def ask(index: int) -> None:
        stream = client.completions.create(
            model="book-base",
            prompt=prompts[index],
            max_tokens=16,
            temperature=0,
            stream=True,
        )
        results[index] = "".join(chunk.choices[0].text for chunk in stream)

    start = time.perf_counter()
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    concurrent = time.perf_counter() - start
    start = time.perf_counter()
    for index in range(16):
        ask(index)
    one_at_a_time = time.perf_counter() - start
    print(
        f"16 requests of 16 tokens: {concurrent:.2f} s concurrently, "
        f"{one_at_a_time:.2f} s one at a time "
        f"({one_at_a_time / concurrent:.1f}x the throughput)"
    )
    assert [results[i] for i in range(16)] == expected


def test_the_chat_page_is_served_at_the_root_and_loads_nothing_from_elsewhere(server):
    with urllib.request.urlopen(server[0] + "/") as answer:
        assert answer.headers["content-type"].startswith("text/html")
        page = answer.read().decode()
    assert "/v1/chat/completions" in page and "getReader" in page
    assert "http://" not in page and "https://" not in page


def test_running_servers_get_different_free_ports(reference):
    apps = [create_app(models={"one": lambda: reference["book-base"]}) for _ in "ab"]
    with running_server(apps[0]) as first, running_server(apps[1]) as second:
        assert first != second
        with urllib.request.urlopen(first + "/v1/models") as answer:
            assert json.loads(answer.read())["data"][0]["id"] == "one"
