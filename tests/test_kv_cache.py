"""llm.kv_cache: cached generation gives the uncached results, faster paths aside."""

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llm.generate import generate
from llm.kv_cache import (
    CachedModel,
    KVCache,
    cached_attention,
    forward_cached,
    generate_cached,
    linear,
)
from llm.model import GPT2_CONFIGS, GPTConfig, GPTModel

SMALL = GPTConfig(vocab_size=97, context_length=24, emb_dim=32, n_heads=4, n_layers=3,
                  drop_rate=0.1)


def small_model(seed=0, cfg=SMALL):
    torch.manual_seed(seed)
    model = GPTModel(cfg)
    model.init_gpt2_weights()
    return model.eval()


def prompt(batch=2, tokens=5, seed=1, vocab_size=97):
    return torch.randint(0, vocab_size, (batch, tokens), generator=torch.Generator().manual_seed(seed))


def test_cache_shape_dtype_and_memory_follow_the_model():
    model = small_model().to(torch.bfloat16)
    cache = KVCache(model, batch_size=3, max_tokens=10)
    assert cache.keys.shape == (3, 3, 4, 10, 8)  # layers, batch, heads, positions, head_dim
    assert cache.keys.dtype == torch.bfloat16 and cache.values.shape == cache.keys.shape
    assert cache.nbytes == 2 * 3 * 3 * 10 * 32 * 2
    assert (cache.batch_size, cache.max_tokens, cache.length) == (3, 10, 0)


def test_prefill_then_single_tokens_give_the_full_forward_logits():
    model, ids = small_model(), prompt(tokens=12)
    cache = KVCache(model, batch_size=2)
    with torch.no_grad():
        for end in range(6, 13):
            new = ids[:, :6] if end == 6 else ids[:, end - 1 : end]
            expected = model(ids[:, :end])[:, -1]
            torch.testing.assert_close(forward_cached(model, new, cache), expected,
                                       rtol=1e-4, atol=1e-5)
    assert cache.length == 12


def test_a_prefill_after_cached_tokens_is_causal_within_the_new_tokens():
    model, ids = small_model(), prompt(tokens=10)
    cache = KVCache(model, batch_size=2)
    with torch.no_grad():
        forward_cached(model, ids[:, :4], cache)
        logits = forward_cached(model, ids[:, 4:10], cache)  # six new tokens at once
        torch.testing.assert_close(logits, model(ids)[:, -1], rtol=1e-4, atol=1e-5)


def test_cached_attention_stores_keys_and_values_in_the_layer_slots():
    model, ids = small_model(), prompt(batch=1, tokens=3)
    cache = KVCache(model, batch_size=1)
    att = model.blocks[0].att
    x = torch.randn(1, 3, SMALL.emb_dim)
    with torch.no_grad():
        cached_attention(att, x, cache, layer=0)
        keys = att.qkv(x).view(1, 3, 3, 4, 8)[:, :, 1].transpose(1, 2)
    torch.testing.assert_close(cache.keys[0, :, :, :3], keys)
    assert cache.keys[1:].abs().sum() == 0  # other layers untouched
    assert cache.length == 0  # only forward_cached advances the length


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**16), st.integers(1, 8), st.integers(0, 30))
def test_greedy_tokens_equal_the_uncached_loop_including_past_the_context(seed, tokens, new):
    model, ids = small_model(seed % 3), prompt(batch=2, tokens=tokens, seed=seed)
    assert torch.equal(generate_cached(model, ids, new), generate(model, ids, new))


def test_greedy_tokens_equal_the_uncached_loop_for_gpt2_small():
    torch.manual_seed(0)
    model = GPTModel(GPT2_CONFIGS["gpt2"].replace(context_length=64, drop_rate=0.0))
    model.init_gpt2_weights()
    model.eval()
    ids = prompt(batch=1, tokens=7, vocab_size=50257)
    assert torch.equal(generate_cached(model, ids, 20), generate(model, ids, 20))


def test_a_prompt_longer_than_the_context_uses_its_last_positions():
    model, ids = small_model(), prompt(tokens=40)
    assert torch.equal(generate_cached(model, ids, 5), generate(model, ids, 5))


def test_sampling_with_the_same_generator_draws_the_same_tokens():
    model, ids = small_model(), prompt()
    options = dict(temperature=1.2, top_k=20, top_p=0.95)
    cached = generate_cached(model, ids, 15, generator=torch.Generator().manual_seed(4), **options)
    plain = generate(model, ids, 15, generator=torch.Generator().manual_seed(4), **options)
    assert torch.equal(cached, plain)


def test_end_of_text_stops_and_pads_like_the_uncached_loop():
    model, ids = small_model(), prompt(batch=3)
    first = generate(model, ids, 1)[:, -1]
    eos = int(first[0])  # the first sequence ends at once
    cached = generate_cached(model, ids, 10, eos_id=eos)
    assert torch.equal(cached, generate(model, ids, 10, eos_id=eos))
    assert (cached[0, 5:] == eos).all()


def test_zero_new_tokens_returns_the_prompt():
    model, ids = small_model(), prompt()
    assert torch.equal(generate_cached(model, ids, 0), ids)


def test_reset_lets_the_cache_serve_a_new_sequence():
    model, ids = small_model(), prompt(batch=1, tokens=8)
    cache = KVCache(model, batch_size=1)
    with torch.no_grad():
        forward_cached(model, prompt(batch=1, tokens=8, seed=9), cache)
        cache.reset()
        logits = forward_cached(model, ids, cache)
        torch.testing.assert_close(logits, model(ids)[:, -1], rtol=1e-4, atol=1e-5)


def test_bf16_weights_decode_close_to_fp32():
    torch.manual_seed(0)
    model = GPTModel(GPT2_CONFIGS["gpt2"].replace(context_length=64, n_layers=4, drop_rate=0.0))
    model.init_gpt2_weights()
    model.eval()
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    ids = prompt(batch=1, tokens=10, vocab_size=50257)
    with torch.no_grad():
        reference = forward_cached(model, ids, KVCache(model, 1))
        approximate = forward_cached(bf16, ids, KVCache(bf16, 1)).float()
    assert approximate.dtype == torch.float32
    assert ((approximate - reference).norm() / reference.norm()) < 0.05
    top = set(reference.topk(5).indices[0].tolist())
    assert approximate.argmax().item() in top  # bf16's choice is among fp32's best
    assert generate_cached(bf16, ids, 5).shape == (1, 15)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda m: KVCache(m, 1, max_tokens=25), "max_tokens must be between 1 and the context length 24, got 25"),
        (lambda m: KVCache(m, 0), "batch_size must be at least 1, got 0"),
        (lambda m: forward_cached(m, prompt(batch=3), KVCache(m, 2)), "the cache holds 2 sequences, got a batch of 3"),
        (lambda m: forward_cached(m, prompt(tokens=6), KVCache(m, 2, max_tokens=5)), "6 new tokens do not fit: the cache holds 0 of 5 positions"),
        (lambda m: generate_cached(m, prompt(), -1), "max_new_tokens must be 0 or more, got -1"),
        (lambda m: generate_cached(m, prompt(), 3, temperature=-1.0), "temperature must be 0 or more"),
        (lambda m: generate_cached(m, torch.zeros(3, dtype=torch.long), 3), r"token_ids must be \(batch, tokens\), got \(3,\)"),
    ],
)
def test_bad_arguments_are_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make(small_model())


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(("out_features", "bias", "batch"), [(12, True, 1), (13, False, 2), (7, True, 3)])
def test_linear_computes_the_layer_for_one_position(threads, out_features, bias, batch):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        layer = torch.nn.Linear(10, out_features, bias=bias)
        x = torch.randn(batch, 1, 10)
        torch.testing.assert_close(linear(layer, x), layer(x))
        several = torch.randn(batch, 4, 10)  # more than one position: the layer itself
        assert torch.equal(linear(layer, several), layer(several))
    finally:
        torch.set_num_threads(previous)


def test_cached_model_feeds_each_token_once():
    model, ids = small_model(), prompt(batch=2, tokens=5)
    cached = CachedModel(model, batch_size=2)
    out = generate(cached, ids, 7)
    assert cached.cache.length == 5 + 7 - 1  # the last token is returned, not fed
    assert torch.equal(out, generate(model, ids, 7))
