"""llm.instruct: the instruction data and its prompt format, padded and masked
batches, the masked loss, greedy responses, the offline metrics (checked against
the rouge-score package), the cached finetuned model, and the optional judge."""

import http.server
import json
import random
import socket
import threading
import time
from functools import partial

import pytest
import torch
from rouge_score import rouge_scorer

from llm.checkpoint import load_model, save_checkpoint
from llm.instruct import (
    INSTRUCT_TRAINING,
    JUDGE_URL_ENV,
    PROMPT_PREAMBLE,
    InstructionDataError,
    InstructionDataset,
    JudgeError,
    JudgeUnavailableError,
    check_entry,
    exact_match,
    finetune_instructions,
    format_example,
    format_prompt,
    generate_response,
    instruct_model,
    instruct_model_path,
    instruction_collate,
    judge_prompt,
    judge_responses,
    judge_score,
    lcs_length,
    load_instructions,
    masked_loss,
    parse_score,
    respond,
    respond_all,
    response_loss,
    rouge_l_f1,
    score_responses,
    split_instructions,
    token_f1,
    words,
)
from llm.train import batch_loss, evaluate

END = 0
ENTRY = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}
BARE = {"instruction": "Name a colour.", "input": "", "output": "Blue."}


class CharTokenizer:
    """One token per character (ids 1-63); id 0 is end-of-text."""

    eot_token = END

    def encode_ordinary(self, text):
        return [1 + ord(c) % 63 for c in text]

    def decode(self, ids):
        return "".join(chr(64 + i) for i in ids)


# ---- the data and the prompt format ----


def test_the_instruction_data_has_1100_valid_entries_325_with_an_input(mirror):
    entries = load_instructions()
    assert len(entries) == 1100
    assert sum(bool(entry["input"]) for entry in entries) == 325
    assert all(set(entry) == {"instruction", "input", "output"} for entry in entries)


def test_the_prompt_has_the_alpaca_sections_and_ends_with_the_response_header():
    assert format_prompt(ENTRY) == (
        f"{PROMPT_PREAMBLE}\n\n### Instruction:\nAdd the numbers.\n\n"
        "### Input:\n2 and 3\n\n### Response:\n"
    )
    assert format_prompt(BARE) == (
        f"{PROMPT_PREAMBLE}\n\n### Instruction:\nName a colour.\n\n### Response:\n"
    )
    assert format_example(ENTRY) == format_prompt(ENTRY) + "5"


def test_a_bare_request_needs_no_response_or_input_to_be_formatted():
    assert format_prompt({"instruction": "Name a colour."}) == format_prompt(BARE)


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"input": "", "output": "x"}, "entry 2 has no 'instruction' field"),
        ({"instruction": "Do it.", "input": ""}, "entry 2 has no 'output' field"),
        ({"instruction": 7, "output": "x"}, "'instruction' field must be a string"),
        ({"instruction": "Do it.", "output": None}, "'output' field must be a string"),
        (
            {"instruction": "Do it.", "input": ["a"], "output": "x"},
            "'input' field must be a string",
        ),
        ({"instruction": "  ", "output": "x"}, "'instruction' field is empty"),
        ("Do it.", "entry 2 must be a dict"),
    ],
)
def test_a_bad_entry_is_a_clear_error_that_names_it(monkeypatch, entry, message):
    monkeypatch.setattr(
        "llm.instruct.read_text", lambda name: json.dumps([ENTRY, BARE, entry])
    )
    with pytest.raises(InstructionDataError, match=message):
        load_instructions()
    with pytest.raises(ValueError, match=message.replace("entry 2", "entry 5")):
        check_entry(entry, 5)


def test_a_file_that_is_not_a_json_list_is_refused(monkeypatch):
    monkeypatch.setattr("llm.instruct.read_text", lambda name: '{"a": 1}')
    with pytest.raises(InstructionDataError, match="JSON list"):
        load_instructions()
    monkeypatch.setattr("llm.instruct.read_text", lambda name: "[{")
    with pytest.raises(InstructionDataError, match="not valid JSON"):
        load_instructions()


def test_a_missing_input_field_reads_as_no_input(monkeypatch):
    monkeypatch.setattr(
        "llm.instruct.read_text",
        lambda name: json.dumps([{"instruction": "Hi.", "output": "Hello."}]),
    )
    assert load_instructions() == [
        {"instruction": "Hi.", "input": "", "output": "Hello."}
    ]


def test_the_split_is_85_5_10_seeded_and_disjoint():
    entries = [{"instruction": str(i), "output": "x"} for i in range(1100)]
    train, val, test = split_instructions(entries)
    assert (len(train), len(val), len(test)) == (935, 55, 110)
    names = [entry["instruction"] for entry in train + val + test]
    assert sorted(names) == sorted(str(i) for i in range(1100))
    assert (train, val, test) == split_instructions(entries)
    assert split_instructions(entries, seed=1)[0] != train


# ---- the data set and the batches ----


def test_an_item_is_prompt_response_and_one_end_of_text_token():
    data = InstructionDataset([ENTRY], CharTokenizer())
    token_ids, prompt_length = data[0]
    tokenizer = CharTokenizer()
    prompt = tokenizer.encode_ordinary(format_prompt(ENTRY))
    assert token_ids.tolist() == prompt + tokenizer.encode_ordinary("5") + [END]
    assert prompt_length.item() == len(prompt)
    assert data.end_id == END and data.dropped == 0


def test_an_example_longer_than_the_context_is_dropped_and_counted():
    tokenizer = CharTokenizer()
    fits = len(tokenizer.encode_ordinary(format_example(BARE)))
    long = {"instruction": "Name a colour.", "input": "", "output": "Blue, green."}
    data = InstructionDataset([long, BARE, long], tokenizer, max_length=fits)
    assert len(data) == 1 and data.dropped == 2
    assert data.entries == [BARE]
    with pytest.raises(ValueError, match="max_length"):
        InstructionDataset([BARE], tokenizer, max_length=0)


def test_a_bad_entry_in_the_data_set_is_named():
    with pytest.raises(InstructionDataError, match="entry 1"):
        InstructionDataset([BARE, {"instruction": "x"}], CharTokenizer())


ITEMS = [
    (torch.tensor([11, 12, 13, 14, 15, END]), torch.tensor(3)),
    (torch.tensor([21, 22, 23, END]), torch.tensor(2)),
]


def test_collate_pads_to_the_longest_item_and_keeps_one_end_of_text_target():
    inputs, targets = instruction_collate(ITEMS, pad_id=END)
    assert inputs.tolist() == [[11, 12, 13, 14, 15], [21, 22, 23, END, END]]
    assert targets.tolist() == [[12, 13, 14, 15, END], [22, 23, END, -100, -100]]
    assert inputs.dtype == targets.dtype == torch.long


def test_collate_can_mask_the_prompt_and_leave_the_response_and_its_end():
    _, targets = instruction_collate(ITEMS, pad_id=END, mask_prompt=True)
    # Prompt lengths 3 and 2: the targets that are prompt tokens are ignored
    assert targets.tolist() == [[-100, -100, 14, 15, END], [-100, 23, END, -100, -100]]
    _, targets = instruction_collate(ITEMS, pad_id=END, ignore_index=-1)
    assert targets[1].tolist() == [22, 23, END, -1, -1]


def test_collate_refuses_an_empty_batch_and_items_too_short_to_shift():
    with pytest.raises(ValueError, match="empty batch"):
        instruction_collate([], pad_id=END)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        instruction_collate([(torch.tensor([END]), torch.tensor(0))], pad_id=END)


def test_the_end_of_text_target_is_the_only_one_after_each_response():
    tokenizer = CharTokenizer()
    data = InstructionDataset([ENTRY, BARE], tokenizer)
    _, targets = instruction_collate([data[0], data[1]], pad_id=END)
    for row in targets:
        kept = row[row != -100]
        assert (kept == END).sum() == 1 and kept[-1] == END


# ---- the loss ----


@pytest.mark.parametrize("mask_prompt", [False, True])
def test_masked_loss_equals_the_cross_entropy_of_the_counted_positions(
    make_tiny_model, mask_prompt
):
    model = make_tiny_model()
    items = [(ids % 64, length) for ids, length in ITEMS]
    inputs, targets = instruction_collate(items, pad_id=END, mask_prompt=mask_prompt)
    torch.testing.assert_close(
        masked_loss(model, inputs, targets), batch_loss(model, inputs, targets)
    )


def test_masked_loss_refuses_a_batch_with_nothing_to_learn(make_tiny_model):
    targets = torch.full((1, 3), -100)
    with pytest.raises(ValueError, match="every target"):
        masked_loss(make_tiny_model(), torch.ones(1, 3, dtype=torch.long), targets)


def test_response_loss_counts_only_the_responses(make_tiny_model):
    model = make_tiny_model(context_length=256)
    data = InstructionDataset([ENTRY, BARE], CharTokenizer())
    _, targets = instruction_collate([data[0], data[1]], pad_id=END, mask_prompt=True)
    collate = partial(instruction_collate, pad_id=END, mask_prompt=True)
    expected = evaluate(model, data, 16, loss_fn=batch_loss, collate=collate)
    assert response_loss(model, data) == pytest.approx(expected, rel=1e-5)
    # "5" plus end-of-text, and "Blue." plus end-of-text
    assert (targets != -100).sum() == 2 + 6


# ---- responses ----


def constant_model(make_tiny_model, token: int):
    """A tiny model (context 256) whose every next token is `token`."""
    model = make_tiny_model(context_length=256)
    with torch.no_grad():
        model.final_norm.weight.zero_()
        model.final_norm.bias.fill_(1.0)
        model.out_head.weight.zero_()
        model.out_head.weight[token] = 1.0
    return model


def test_a_response_stops_at_end_of_text(make_tiny_model):
    model = constant_model(make_tiny_model, END)
    assert generate_response(model, CharTokenizer(), ENTRY) == ("", True)
    assert respond(model, CharTokenizer(), ENTRY) == ""


def test_a_response_without_end_of_text_stops_at_the_limit_or_the_context(
    make_tiny_model,
):
    model = constant_model(make_tiny_model, 5)
    tokenizer = CharTokenizer()
    assert generate_response(model, tokenizer, ENTRY, 7) == ("E" * 7, False)
    room = 256 - len(tokenizer.encode_ordinary(format_prompt(ENTRY)))
    text, ended = generate_response(model, tokenizer, ENTRY, 1000)
    assert len(text) == room and not ended
    records = respond_all(model, tokenizer, [ENTRY, BARE], 3)
    assert records[1] == {**BARE, "response": "EEE", "ended": False}


def test_a_prompt_that_fills_the_context_is_refused(make_tiny_model):
    with pytest.raises(ValueError, match="no room for a response"):
        generate_response(make_tiny_model(), CharTokenizer(), ENTRY)


def test_responding_leaves_the_model_in_its_mode(make_tiny_model):
    model = constant_model(make_tiny_model, END).train()
    respond(model, CharTokenizer(), ENTRY)
    assert model.training


# ---- metrics ----


def test_words_are_lowercase_ascii_letters_and_digits():
    assert words("The cat's 2 hats, I think!") == [
        "the",
        "cat",
        "s",
        "2",
        "hats",
        "i",
        "think",
    ]


def test_lcs_and_rouge_l_on_known_values():
    assert lcs_length("abcbdab", "bdcaba") == 4
    assert lcs_length([], [1, 2]) == 0
    # LCS "the cat on mat": precision 4/4, recall 4/6
    assert rouge_l_f1("the cat sat on the mat", "The cat on mat.") == pytest.approx(0.8)
    assert rouge_l_f1("a b c", "c b a") == pytest.approx(1 / 3)
    assert rouge_l_f1("same words", "Same words!") == 1.0
    assert rouge_l_f1("", "something") == rouge_l_f1("something", "") == 0.0


def test_token_f1_ignores_order_and_counts_repeats():
    assert token_f1("a b c", "c b a") == 1.0
    # Overlap 2 ("the" once, "cat"): precision 2/3, recall 2/4
    assert token_f1("the cat the hat", "the cat sat") == pytest.approx(4 / 7)
    assert token_f1("", "") == 1.0 and token_f1("", "x") == 0.0
    assert token_f1("x", "y") == 0.0


def test_exact_match_ignores_case_and_punctuation():
    assert exact_match("Crocodile, Elephant, Zebra", "crocodile elephant zebra.")
    assert not exact_match("joyful.", "The word is joyful.")


VOCABULARY = ["the", "The", "cat", "sat", "on", "mat", "a", "dog,", "ran!", "2", "x-y"]


def random_text(generator: random.Random) -> str:
    return " ".join(generator.choices(VOCABULARY, k=generator.randint(0, 12)))


def test_rouge_l_equals_the_rouge_score_package_on_random_pairs():
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    generator = random.Random(0)
    for _ in range(300):
        reference, candidate = random_text(generator), random_text(generator)
        expected = scorer.score(reference, candidate)["rougeL"].fmeasure
        assert rouge_l_f1(reference, candidate) == pytest.approx(expected, abs=1e-12)


def test_score_responses_averages_each_metric():
    records = [
        {**BARE, "response": "Blue", "ended": True},
        {**ENTRY, "output": "The sum is five", "response": "five", "ended": False},
    ]
    scores = score_responses(records)
    assert scores["rouge_l"] == pytest.approx((1 + 0.4) / 2)
    assert scores["token_f1"] == pytest.approx((1 + 0.4) / 2)
    # Both references are short; only the first is matched word for word
    assert scores["exact_match"] == 0.5
    assert scores["ended"] == 0.5
    with pytest.raises(ValueError, match="no records"):
        score_responses([])


# ---- training and the cached model ----


def test_finetuning_runs_the_training_loop_and_lowers_the_loss(make_tiny_model):
    model = make_tiny_model(context_length=256)
    tokenizer = CharTokenizer()
    data = InstructionDataset([ENTRY, BARE] * 4, tokenizer)
    settings = INSTRUCT_TRAINING.replace(
        max_steps=20, batch_size=4, eval_every=20, lr=1e-2, precision="fp32"
    )
    before = response_loss(model, data)
    log = finetune_instructions(model, data, data, settings, on_eval=None)
    assert log.step == 20
    assert response_loss(model, data) < before


def test_the_cache_name_changes_with_the_recipe():
    path = instruct_model_path()
    assert path.parent.name == "models" and path.name.startswith("instruct-model-")
    assert instruct_model_path(INSTRUCT_TRAINING.replace(lr=1e-4)) != path


def test_instruct_model_loads_the_cached_model(make_tiny_model):
    model = make_tiny_model()
    save_checkpoint(model, instruct_model_path())
    loaded = instruct_model("cpu")
    assert not loaded.training
    for name, tensor in load_model(instruct_model_path(), "cpu").state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)


# ---- the judge ----


@pytest.mark.parametrize(
    "reply, score",
    [
        ("85", 85.0),
        (" 85\n", 85.0),
        ("Score: 85.", 85.0),
        ("85/100", 85.0),
        ("I would give it 85 out of 100.", 85.0),
        ("72.5", 72.5),
        ("0", 0.0),
        ("100", 100.0),
        ("85, yes 85", 85.0),
    ],
)
def test_a_score_is_read_from_a_well_formed_reply(reply, score):
    assert parse_score(reply) == score


@pytest.mark.parametrize(
    "reply, message",
    [
        ("", "no number"),
        ("A good answer.", "no number"),
        ("150", "outside 0-100"),
        ("-5", "outside 0-100"),
        ("between 70 and 80", "several numbers"),
        ("Score (0-100): 85", "several numbers"),
        (None, "must be text"),
    ],
)
def test_a_malformed_reply_is_a_clear_judge_error(reply, message):
    with pytest.raises(JudgeError, match=message):
        parse_score(reply)


def test_the_judge_prompt_holds_the_task_the_reference_and_the_answer():
    prompt = judge_prompt(ENTRY, "It is 5.")
    for part in ["Add the numbers.", "Input: 2 and 3", "Reference answer: 5"]:
        assert part in prompt
    assert "Answer to grade: It is 5." in prompt and "number only" in prompt
    assert "Input:" not in judge_prompt(BARE, "Red.")


class JudgeHandler(http.server.BaseHTTPRequestHandler):
    """A fake OpenAI-compatible endpoint: replies with the server's next answer."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, body))
        status, payload, delay = self.server.answers.pop(0)
        time.sleep(delay)
        data = (
            payload.encode()
            if isinstance(payload, str)
            else json.dumps(payload).encode()
        )
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except OSError:
            pass

    def log_message(self, *args):
        pass


def chat(content: str) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": content}}]}


@pytest.fixture
def judge_server(monkeypatch):
    """A local judge on 127.0.0.1; set `server.answers` to (status, payload, delay)."""
    monkeypatch.setenv("no_proxy", "*")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), JudgeHandler)
    server.requests, server.answers = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield server
    server.shutdown()
    server.server_close()


def test_the_judge_is_asked_at_temperature_0_and_its_score_returned(judge_server):
    judge_server.answers = [(200, chat("Score: 90"), 0)]
    assert judge_score(ENTRY, "5", url=judge_server.url, model="judge-8b") == 90.0
    path, body = judge_server.requests[0]
    assert path == "/v1/chat/completions"
    assert body["model"] == "judge-8b" and body["temperature"] == 0
    assert body["messages"] == [{"role": "user", "content": judge_prompt(ENTRY, "5")}]


def test_the_endpoint_can_come_from_the_environment(judge_server, monkeypatch):
    monkeypatch.setenv(JUDGE_URL_ENV, judge_server.url)
    judge_server.answers = [(200, chat("40"), 0)]
    assert judge_score(ENTRY, "4") == 40.0


def test_no_endpoint_configured_is_a_clear_unavailable_error(monkeypatch):
    monkeypatch.delenv(JUDGE_URL_ENV, raising=False)
    with pytest.raises(JudgeUnavailableError, match=f"set {JUDGE_URL_ENV}"):
        judge_score(ENTRY, "5")


def test_an_unreachable_endpoint_is_a_clear_unavailable_error(monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(JudgeUnavailableError, match="could not reach the judge"):
        judge_score(ENTRY, "5", url=f"http://127.0.0.1:{port}/v1")


def test_a_slow_endpoint_is_a_timeout(judge_server):
    judge_server.answers = [(200, chat("80"), 1.0)]
    with pytest.raises(JudgeUnavailableError, match="did not answer within 0.2 s"):
        judge_score(ENTRY, "5", url=judge_server.url, timeout=0.2)


@pytest.mark.parametrize(
    "status, payload, error, message",
    [
        (500, {"error": "boom"}, JudgeUnavailableError, "answered HTTP 500"),
        (200, "not json", JudgeError, "did not answer with JSON"),
        (200, {"choices": []}, JudgeError, "not a chat completion"),
        (200, chat("excellent"), JudgeError, "no number"),
        (200, chat("120"), JudgeError, "outside 0-100"),
    ],
)
def test_a_bad_answer_is_a_clear_error(judge_server, status, payload, error, message):
    judge_server.answers = [(status, payload, 0)]
    with pytest.raises(error, match=message):
        judge_score(ENTRY, "5", url=judge_server.url)


def test_judging_many_records_keeps_going_past_malformed_replies(judge_server):
    records = [{**ENTRY, "response": "5"}, {**BARE, "response": "?"}]
    judge_server.answers = [(200, chat("75"), 0), (200, chat("hmm"), 0)]
    scores, problems = judge_responses(records, url=judge_server.url)
    assert scores == [75.0, None]
    assert len(problems) == 1 and problems[0].startswith("record 1: ")
    judge_server.answers = [(503, {}, 0)]
    with pytest.raises(JudgeUnavailableError, match="HTTP 503"):
        judge_responses(records, url=judge_server.url)
