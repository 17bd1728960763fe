"""llm.generate: greedy and sampled generation, end-of-text handling, the
streaming form, and one argument check for all of them."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llm.generate import filter_logits, generate, generate_stream
from llm.model import GPTConfig


class FixedLogits(torch.nn.Module):
    """A stand-in model that always predicts the same next-token logits (it has
    no cache, so it is used with use_cache=False)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.as_tensor(logits, dtype=torch.float32)
        self.cfg = GPTConfig(
            vocab_size=len(self.logits),
            context_length=4,
            emb_dim=4,
            n_heads=1,
            n_layers=1,
        )

    def forward(self, token_ids):
        batch, tokens = token_ids.shape
        return self.logits.expand(batch, tokens, -1)


LOGITS = [4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]


def sample_counts(n=2000, **options):
    model = FixedLogits(LOGITS)
    generator = torch.Generator().manual_seed(0)
    prompt = torch.zeros(1, 1, dtype=torch.long)
    out = generate(model, prompt, n, generator=generator, use_cache=False, **options)
    return torch.bincount(out[0, 1:], minlength=len(LOGITS))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-20, 20), min_size=2, max_size=30), st.data())
def test_top_k_never_keeps_a_token_outside_the_k_largest(values, data):
    logits = torch.tensor([values])
    k = data.draw(st.integers(1, len(values)))
    kept = torch.isfinite(filter_logits(logits, top_k=k))[0]
    kth_largest = torch.topk(logits[0], k).values[-1]
    assert torch.all(logits[0][kept] >= kth_largest) and kept.sum() >= k


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(-1000, 1000), min_size=2, max_size=30, unique=True),
    st.floats(0.01, 1.0),
)
def test_top_p_keeps_the_smallest_prefix_reaching_p(values, p):
    # distinct logits: no ties to order
    logits = torch.tensor([values], dtype=torch.float64) / 100
    kept = torch.isfinite(filter_logits(logits, top_p=p))[0]
    probabilities = torch.softmax(logits[0], dim=0)
    sorted_probabilities, order = torch.sort(probabilities, descending=True)
    n_kept = int(kept.sum())
    kept_ids = set(torch.nonzero(kept).flatten().tolist())
    assert set(order[:n_kept].tolist()) == kept_ids
    # the kept tokens reach p, and no shorter prefix does
    assert sorted_probabilities[:n_kept].sum() >= p - 1e-9
    assert n_kept == 1 or sorted_probabilities[: n_kept - 1].sum() < p


def test_top_k_sampling_only_draws_the_k_most_likely_tokens():
    counts = sample_counts(temperature=1.0, top_k=2)
    assert set(torch.nonzero(counts).flatten().tolist()) == {3, 7}


def test_top_p_sampling_only_draws_inside_the_nucleus():
    probabilities = torch.softmax(torch.tensor(LOGITS), dim=0)
    counts = sample_counts(temperature=1.0, top_p=0.5)
    assert probabilities[3] > 0.5
    assert set(torch.nonzero(counts).flatten().tolist()) == {3}


@pytest.mark.parametrize("use_cache", [False, True])
def test_greedy_generation_appends_the_most_likely_tokens(make_tiny_model, use_cache):
    model = make_tiny_model()
    prompt = torch.randint(0, 64, (2, 3), generator=torch.Generator().manual_seed(1))
    output = generate(model, prompt, 4, use_cache=use_cache)
    assert output.shape == (2, 7) and torch.equal(output[:, :3], prompt)
    text = prompt
    for _ in range(4):
        best = model(text)[:, -1].argmax(dim=-1, keepdim=True)
        text = torch.cat([text, best], dim=1)
    assert torch.equal(output, text)


@pytest.mark.parametrize("use_cache", [False, True])
def test_zero_new_tokens_return_the_prompt(make_tiny_model, use_cache):
    prompt = torch.randint(0, 64, (2, 5))
    assert torch.equal(
        generate(make_tiny_model(), prompt, 0, use_cache=use_cache), prompt
    )


@pytest.mark.parametrize("use_cache", [False, True])
def test_generation_feeds_the_model_only_its_context_window(make_tiny_model, use_cache):
    model = make_tiny_model()
    # longer than context_length=16
    long_prompt = torch.randint(0, 64, (1, 20))
    output = generate(model, long_prompt, 3, use_cache=use_cache)
    assert output.shape == (1, 23)
    assert output[0, 20] == model(long_prompt[:, -16:])[0, -1].argmax()


def test_temperature_near_zero_equals_greedy(make_tiny_model):
    model = make_tiny_model()
    prompt = torch.randint(0, 64, (2, 3))
    greedy = generate(model, prompt, 6, temperature=0.0)
    sampler = torch.Generator().manual_seed(1)
    cold = generate(model, prompt, 6, temperature=1e-4, generator=sampler)
    assert torch.equal(cold, greedy)


def test_higher_temperature_spreads_the_samples():
    cold, hot = sample_counts(temperature=0.5), sample_counts(temperature=5.0)
    assert torch.count_nonzero(hot) > torch.count_nonzero(cold)


def test_sampling_is_reproducible_with_a_generator():
    assert torch.equal(sample_counts(temperature=1.0), sample_counts(temperature=1.0))


def test_generation_stops_at_end_of_text():
    # always predicts token 2
    model = FixedLogits([0.0, 0.0, 9.0])
    prompt = torch.zeros(1, 2, dtype=torch.long)
    out = generate(model, prompt, 10, eos_id=2, use_cache=False)
    assert out.tolist() == [[0, 0, 2]]


class Alternating(FixedLogits):
    """Row 0 predicts token 2 (end of text) at once, row 1 only after two steps."""

    def forward(self, token_ids):
        logits = torch.zeros(token_ids.shape[0], token_ids.shape[1], 3)
        logits[0, :, 2] = 9.0
        logits[1, :, 1 if token_ids.shape[1] < 4 else 2] = 9.0
        return logits


def test_finished_sequences_are_padded_until_all_are_done():
    prompt = torch.zeros(2, 2, dtype=torch.long)
    out = generate(Alternating([0, 0, 0]), prompt, 10, eos_id=2, use_cache=False)
    assert out.tolist() == [[0, 0, 2, 2, 2], [0, 0, 1, 1, 2]]


def test_the_stream_yields_each_new_token_as_generate_appends_it(make_tiny_model):
    model = make_tiny_model()
    prompt = torch.randint(0, 64, (3, 4))
    options = dict(temperature=0.8, top_k=10)
    streamed = list(
        generate_stream(
            model, prompt, 7, generator=torch.Generator().manual_seed(3), **options
        )
    )
    whole = generate(
        model, prompt, 7, generator=torch.Generator().manual_seed(3), **options
    )
    assert [tuple(t.shape) for t in streamed] == [(3, 1)] * 7
    assert torch.equal(torch.cat([prompt, *streamed], dim=1), whole)


def test_the_stream_stops_when_every_sequence_has_ended():
    prompt = torch.zeros(2, 2, dtype=torch.long)
    stream = generate_stream(
        Alternating([0, 0, 0]), prompt, 10, eos_id=2, use_cache=False
    )
    assert [t.flatten().tolist() for t in stream] == [[2, 1], [2, 1], [2, 2]]


GOOD = {"max_new_tokens": 3}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"max_new_tokens": -1}, "max_new_tokens must be a whole number, 0 or more"),
        ({"max_new_tokens": 2.5}, "max_new_tokens must be a whole number"),
        ({"max_new_tokens": True}, "max_new_tokens must be a whole number"),
        ({"temperature": -1.0}, r"temperature must be .*-1\.0"),
        ({"temperature": float("nan")}, r"temperature must be .*nan"),
        ({"temperature": "hot"}, r"temperature must be .*'hot'"),
        ({"top_k": 0}, r"top_k must be .*at least 1.*got 0"),
        ({"top_k": 2.5}, r"top_k must be .*whole number.*2\.5"),
        ({"top_k": True}, r"top_k must be .*whole number.*True"),
        ({"top_p": 1.5}, r"top_p must be .*\(0, 1\].*1\.5"),
        ({"top_p": 0.0}, r"top_p must be .*\(0, 1\].*0\.0"),
        ({"top_p": "all"}, r"top_p must be .*'all'"),
        ({"eos_id": 64}, r"eos_id must be None or a token id in \[0, 64\), got 64"),
        ({"eos_id": -1}, r"eos_id must be None or a token id"),
        ({"eos_id": 1.0}, r"eos_id must be None or a token id"),
    ],
)
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_bad_arguments_are_clear_errors_at_every_temperature(
    make_tiny_model, changes, message, temperature
):
    model, prompt = make_tiny_model(), torch.zeros(1, 2, dtype=torch.long)
    arguments = {"temperature": temperature, **GOOD, **changes}
    max_new_tokens = arguments.pop("max_new_tokens")
    for use_cache in (False, True):
        with pytest.raises((ValueError, TypeError), match=message):
            generate(model, prompt, max_new_tokens, use_cache=use_cache, **arguments)
        # the stream checks when it is called, before the first token is asked for
        with pytest.raises((ValueError, TypeError), match=message):
            generate_stream(
                model, prompt, max_new_tokens, use_cache=use_cache, **arguments
            )


@pytest.mark.parametrize(
    "token_ids, message",
    [
        (torch.zeros(1, 0, dtype=torch.long), "the prompt is empty"),
        (torch.zeros(0, 3, dtype=torch.long), "the batch is empty"),
        (torch.tensor([[3, 99]]), "token id 99 is outside the vocabulary"),
        (torch.tensor([1, 2, 3]), r"token_ids must be a \(batch, tokens\) tensor"),
    ],
)
def test_bad_prompts_are_clear_errors_even_for_zero_new_tokens(
    make_tiny_model, token_ids, message
):
    with pytest.raises(ValueError, match=message):
        generate(make_tiny_model(), token_ids, 0)
    with pytest.raises(ValueError, match=message):
        generate_stream(make_tiny_model(), token_ids, 5)
