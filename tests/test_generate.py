"""llm.generate: temperature, top-k, top-p and end-of-text handling."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llm.generate import filter_logits, generate, generate_greedy
from llm.model import GPTConfig, GPTModel


class FixedLogits(torch.nn.Module):
    """A stand-in model that always predicts the same next-token logits."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.as_tensor(logits, dtype=torch.float32)
        self.cfg = GPTConfig(vocab_size=len(self.logits), context_length=4, emb_dim=4, n_heads=1, n_layers=1)

    def forward(self, token_ids):
        batch, tokens = token_ids.shape
        return self.logits.expand(batch, tokens, -1)


LOGITS = [4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]


def sample_counts(n=2000, **options):
    model = FixedLogits(LOGITS)
    generator = torch.Generator().manual_seed(0)
    out = generate(model, torch.zeros(1, 1, dtype=torch.long), n, generator=generator, **options)
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
@given(st.lists(st.integers(-1000, 1000), min_size=2, max_size=30, unique=True), st.floats(0.01, 1.0))
def test_top_p_keeps_the_smallest_prefix_reaching_p(values, p):
    logits = torch.tensor([values], dtype=torch.float64) / 100  # distinct: no ties to order
    kept = torch.isfinite(filter_logits(logits, top_p=p))[0]
    probabilities = torch.softmax(logits[0], dim=0)
    sorted_probabilities, order = torch.sort(probabilities, descending=True)
    n_kept = int(kept.sum())
    assert set(order[:n_kept].tolist()) == set(torch.nonzero(kept).flatten().tolist())
    assert sorted_probabilities[:n_kept].sum() >= p - 1e-9  # reaches p ...
    assert n_kept == 1 or sorted_probabilities[: n_kept - 1].sum() < p  # ... and no sooner


def test_top_k_sampling_only_draws_the_k_most_likely_tokens():
    counts = sample_counts(temperature=1.0, top_k=2)
    assert set(torch.nonzero(counts).flatten().tolist()) == {3, 7}


def test_top_p_sampling_only_draws_inside_the_nucleus():
    probabilities = torch.softmax(torch.tensor(LOGITS), dim=0)
    counts = sample_counts(temperature=1.0, top_p=0.5)
    assert probabilities[3] > 0.5 and set(torch.nonzero(counts).flatten().tolist()) == {3}


def test_temperature_near_zero_equals_greedy():
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=30, context_length=8, emb_dim=16, n_heads=2, n_layers=1)).eval()
    prompt = torch.randint(0, 30, (2, 3))
    greedy = generate_greedy(model, prompt, 6)
    assert torch.equal(generate(model, prompt, 6, temperature=0.0), greedy)
    cold = generate(model, prompt, 6, temperature=1e-4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(cold, greedy)


def test_higher_temperature_spreads_the_samples():
    cold, hot = sample_counts(temperature=0.5), sample_counts(temperature=5.0)
    assert torch.count_nonzero(hot) > torch.count_nonzero(cold)


def test_sampling_is_reproducible_with_a_generator():
    assert torch.equal(sample_counts(temperature=1.0), sample_counts(temperature=1.0))


def test_generation_stops_at_end_of_text():
    model = FixedLogits([0.0, 0.0, 9.0])  # always predicts token 2
    out = generate(model, torch.zeros(1, 2, dtype=torch.long), 10, eos_id=2)
    assert out.tolist() == [[0, 0, 2]]


def test_finished_sequences_are_padded_until_all_are_done():
    class Alternating(FixedLogits):
        def forward(self, token_ids):  # row 0 predicts 2 (eos) at once, row 1 only later
            logits = torch.zeros(token_ids.shape[0], token_ids.shape[1], 3)
            logits[0, :, 2] = 9.0
            logits[1, :, 1 if token_ids.shape[1] < 4 else 2] = 9.0
            return logits

    out = generate(Alternating([0, 0, 0]), torch.zeros(2, 2, dtype=torch.long), 10, eos_id=2)
    assert out.tolist() == [[0, 0, 2, 2, 2], [0, 0, 1, 1, 2]]


@pytest.mark.parametrize(
    "options, message",
    [({"temperature": -1.0}, "temperature must be 0 or more"),
     ({"temperature": 1.0, "top_k": 0}, "top_k must be at least 1"),
     ({"temperature": 1.0, "top_p": 1.5}, r"top_p must be in \(0, 1\]")],
)
def test_bad_options_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        generate(FixedLogits(LOGITS), torch.zeros(1, 1, dtype=torch.long), 1, **options)
