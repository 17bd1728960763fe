"""Batched generation: a cache row per sequence, each with its own length, and
continuous batching. The key property: every sequence of a batch gets exactly
the tokens that `llm.generate.generate` gives its prompt alone."""

import pytest
import torch

from bench.serving import batched, one_at_a_time, prompts
from llm.batching import (
    BatchCache,
    ContinuousBatcher,
    Request,
    decode,
    generate_batch,
    prefill,
)
from llm.generate import generate

# prompts of different lengths, 1 to 7 tokens, for a vocabulary of 64
PROMPTS = [[5], [1, 2, 3], [9, 8, 7, 6, 5, 4, 3], [40, 41], [7, 7, 7, 7, 7], [63, 0]]


def solo(model, prompt, max_new_tokens, **options) -> list[int]:
    """The new tokens `generate` gives `prompt` alone (ending after eos_id)."""
    out = generate(model, torch.tensor([prompt]), max_new_tokens, **options)
    return out[0, len(prompt) :].tolist()


@pytest.fixture
def model(make_tiny_model):
    # a context of 32 positions, so that sequences run for many steps
    return make_tiny_model(context_length=32)


@pytest.mark.parametrize("max_batch", [1, 3, 8])
def test_greedy_batches_give_every_prompt_its_solo_tokens(model, max_batch):
    batched = generate_batch(model, PROMPTS, 20, max_batch=max_batch)
    assert batched == [solo(model, prompt, 20) for prompt in PROMPTS]


def test_sequences_that_end_early_stop_after_their_eos_token(model):
    # the token most often chosen first is a likely end for several prompts
    eos_id = solo(model, PROMPTS[0], 3)[1]
    expected = [solo(model, prompt, 20, eos_id=eos_id) for prompt in PROMPTS]
    assert any(len(tokens) < 20 for tokens in expected)
    batched = generate_batch(model, PROMPTS, 20, eos_id=eos_id, max_batch=3)
    assert batched == expected


def test_seeded_sampling_gives_each_request_its_solo_tokens(model):
    options = {"temperature": 1.3, "top_k": 20, "top_p": 0.9}
    expected = [
        solo(model, p, 15, generator=torch.Generator().manual_seed(i), **options)
        for i, p in enumerate(PROMPTS)
    ]
    generators = [torch.Generator().manual_seed(i) for i in range(len(PROMPTS))]
    batched = generate_batch(
        model, PROMPTS, 15, generators=generators, max_batch=4, **options
    )
    assert batched == expected


def test_a_request_that_joins_a_running_batch_gets_its_solo_tokens(model):
    batcher = ContinuousBatcher(model, max_batch=4)
    tokens = {batcher.submit(Request(PROMPTS[2], 20)): []}
    for _ in range(5):
        for event in batcher.step():
            tokens[event.request_id].append(event.token_id)
    late = batcher.submit(Request(PROMPTS[0], 10))
    tokens[late] = []
    while batcher.running or batcher.waiting:
        for event in batcher.step():
            tokens[event.request_id].append(event.token_id)
    assert tokens == {0: solo(model, PROMPTS[2], 20), late: solo(model, PROMPTS[0], 10)}


def test_a_reused_row_ignores_the_stale_keys_of_its_longer_predecessor(model):
    batcher = ContinuousBatcher(model, max_batch=1)
    first = batcher.submit(Request(list(range(20)), 5))
    while batcher.running or batcher.waiting:
        batcher.step()
    # the row now holds 24 stale positions; a 2-token prompt goes in it
    second = batcher.submit(Request([3, 4], 8))
    assert second != first
    tokens = [event.token_id for _ in range(8) for event in batcher.step()]
    assert tokens == solo(model, [3, 4], 8)


def test_a_finished_request_frees_its_row_for_a_waiting_one(model):
    batcher = ContinuousBatcher(model, max_batch=2)
    for prompt, steps in [(PROMPTS[0], 2), (PROMPTS[1], 6), (PROMPTS[2], 3)]:
        batcher.submit(Request(prompt, steps))
    counts = []
    events = []
    while batcher.running or batcher.waiting:
        events += batcher.step()
        counts.append((batcher.running, batcher.waiting))
    # the third waits until the first is done after its second token
    assert counts[:3] == [(2, 1), (1, 1), (2, 0)]
    finished = [(e.request_id, e.reason) for e in events if e.finished]
    assert finished == [(0, "length"), (2, "length"), (1, "length")]


def test_cancel_drops_running_and_waiting_requests(model):
    batcher = ContinuousBatcher(model, max_batch=1)
    running = batcher.submit(Request(PROMPTS[1], 10))
    waiting = batcher.submit(Request(PROMPTS[2], 10))
    batcher.step()
    batcher.cancel(waiting)
    assert (batcher.running, batcher.waiting) == (1, 0)
    batcher.cancel(running)
    assert (batcher.running, batcher.waiting) == (0, 0)
    assert batcher.step() == []


def test_prefill_gives_each_padded_prompt_the_models_own_next_token_logits(model):
    cache = BatchCache(model, rows=4)
    logits = prefill(model, cache, [3, 0, 1], PROMPTS[:3])
    for row, prompt in enumerate(PROMPTS[:3]):
        expected = model(torch.tensor([prompt]))[0, -1]
        torch.testing.assert_close(logits[row], expected, atol=1e-5, rtol=1e-5)
    # rows 3, 0 and 1 hold prompts of 1, 3 and 7 tokens; row 2 stays free
    assert cache.lengths == [3, 7, 0, 1]


@pytest.mark.parametrize("rows", [[0, 1], [2, 0]], ids=["neighbours", "gathered"])
def test_decode_gives_each_row_the_logits_of_its_longer_sequence(model, rows):
    cache = BatchCache(model, rows=3)
    prefill(model, cache, rows, [PROMPTS[0], PROMPTS[2]])
    logits = decode(model, cache, rows, torch.tensor([11, 12]))
    for i, (prompt, token) in enumerate([(PROMPTS[0], 11), (PROMPTS[2], 12)]):
        expected = model(torch.tensor([[*prompt, token]]))[0, -1]
        torch.testing.assert_close(logits[i], expected, atol=1e-5, rtol=1e-5)
    assert [cache.lengths[row] for row in rows] == [2, 8]


def test_requests_that_do_not_fit_the_cache_are_refused(model):
    batcher = ContinuousBatcher(model, max_batch=2)
    with pytest.raises(ValueError, match="do not fit"):
        batcher.submit(Request(list(range(30)), 4))
    # exactly full: the last token need not be fed back
    batcher.submit(Request(list(range(30)), 3))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"prompt_ids": []}, "prompt is empty"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 2.5}, "max_new_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
    ],
)
def test_bad_requests_are_refused_with_a_message_naming_the_option(changes, message):
    options = {"prompt_ids": [1, 2], "max_new_tokens": 4, **changes}
    with pytest.raises(ValueError, match=message):
        Request(**options)


def test_a_model_in_training_mode_is_refused(model):
    model.train()
    with pytest.raises(ValueError, match="eval"):
        generate_batch(model, PROMPTS[:2], 3)


def test_the_cache_refuses_sizes_it_cannot_hold(model):
    with pytest.raises(ValueError, match="rows"):
        BatchCache(model, rows=0)
    with pytest.raises(ValueError, match="max_tokens"):
        BatchCache(model, rows=2, max_tokens=33)


def test_one_generator_per_prompt_is_required(model):
    with pytest.raises(ValueError, match="one generator per prompt"):
        generate_batch(model, PROMPTS[:2], 3, generators=[None])


def test_the_serving_benchmark_sides_generate_the_same_tokens(model):
    requests = [prompt[:5] for prompt in prompts(model.cfg.vocab_size)]
    ours = batched(model, requests, 6)()
    peer = one_at_a_time(model, requests, 6)()
    assert ours == [tokens.tolist() for tokens in peer]
    assert [len(p) for p in prompts(50257)] == [4, 6, 8, 10, 12, 14, 16, 18]
