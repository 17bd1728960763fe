"""llm.kv_cache: the cache object, cached generation equal to full recomputation,
and the row-split matrix-vector product that decoding uses on a CPU."""

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm.generate import generate
from llm.kv_cache import KVCache, row_split_linear, row_split_matvec
from llm.model import GPT2_CONFIGS, GPTModel


def prompt(batch=2, tokens=5, seed=1, vocab_size=64):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch, tokens), generator=generator)


@pytest.fixture
def model(make_tiny_model):
    """The shared tiny model with dropout configured (eval mode ignores it) and
    GPT-2's initialisation, whose small weights give realistic logits."""
    model = make_tiny_model(drop_rate=0.1)
    model.init_gpt2_weights()
    return model


def threads(count):
    """A context in which torch uses `count` threads, restored afterwards."""

    class Threads:
        def __enter__(self):
            self.previous = torch.get_num_threads()
            torch.set_num_threads(count)

        def __exit__(self, *exc):
            torch.set_num_threads(self.previous)

    return Threads()


def test_cache_shape_dtype_and_memory_follow_the_model(model, tiny_config):
    model = model.to(torch.bfloat16)
    cache = KVCache(model, batch_size=3, max_tokens=10)
    layers, heads = tiny_config.n_layers, tiny_config.n_heads
    head_dim = tiny_config.emb_dim // heads
    # layers, batch, heads, positions, head_dim
    assert cache.keys.shape == (layers, 3, heads, 10, head_dim)
    assert cache.keys.dtype == torch.bfloat16 and cache.values.shape == cache.keys.shape
    assert cache.nbytes == 2 * layers * 3 * 10 * tiny_config.emb_dim * 2
    assert (cache.batch_size, cache.max_tokens, cache.length) == (3, 10, 0)
    assert len(cache.layers) == layers
    # each layer's store is a view of the shared tensors, not a copy
    assert cache.layers[1].keys.data_ptr() == cache.keys[1].data_ptr()


def test_prefill_then_single_tokens_give_the_full_forward_logits(model):
    ids = prompt(tokens=12)
    cache = KVCache(model, batch_size=2)
    with torch.no_grad():
        for end in range(6, 13):
            new = ids[:, :6] if end == 6 else ids[:, end - 1 : end]
            expected = model(ids[:, :end])[:, -1]
            cached = model(new, cache=cache)[:, -1]
            torch.testing.assert_close(cached, expected, rtol=1e-4, atol=1e-5)
    assert cache.length == 12


def test_a_prefill_after_cached_tokens_is_causal_within_the_new_tokens(model):
    ids = prompt(tokens=10)
    cache = KVCache(model, batch_size=2)
    with torch.no_grad():
        model(ids[:, :4], cache=cache)
        # six new tokens at once, after four cached ones
        logits = model(ids[:, 4:10], cache=cache)
        torch.testing.assert_close(logits, model(ids)[:, 4:], rtol=1e-4, atol=1e-5)


def test_each_layer_stores_the_keys_of_its_own_attention(model, tiny_config):
    ids = prompt(batch=1, tokens=3)
    cache = KVCache(model, batch_size=1)
    captured = {}
    first = model.blocks[0]

    def keep_input(module, args):
        captured["x"] = args[0]

    hook = first.att.register_forward_pre_hook(keep_input)
    with torch.no_grad():
        model(ids, cache=cache)
    hook.remove()
    heads, head_dim = tiny_config.n_heads, tiny_config.emb_dim // tiny_config.n_heads
    with torch.no_grad():
        qkv = first.att.qkv(captured["x"]).view(1, 3, 3, heads, head_dim)
    keys = qkv[:, :, 1].transpose(1, 2)
    torch.testing.assert_close(cache.keys[0, :, :, :3], keys)
    assert not torch.allclose(cache.keys[1, :, :, :3], keys)
    assert [layer.length for layer in cache.layers] == [3, 3]


# make_tiny_model is a stateless factory, so sharing it between examples is safe
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.integers(0, 2**16), st.integers(1, 8), st.integers(0, 30))
def test_greedy_tokens_equal_the_uncached_loop_including_past_the_context(
    make_tiny_model, seed, tokens, new
):
    model = make_tiny_model(seed % 3)
    model.init_gpt2_weights()
    ids = prompt(batch=2, tokens=tokens, seed=seed)
    cached = generate(model, ids, new)
    assert torch.equal(cached, generate(model, ids, new, use_cache=False))


def test_greedy_tokens_equal_the_uncached_loop_for_gpt2_small():
    torch.manual_seed(0)
    model = GPTModel(GPT2_CONFIGS["gpt2"].replace(context_length=64, drop_rate=0.0))
    model.init_gpt2_weights()
    model.eval()
    ids = prompt(batch=1, tokens=7, vocab_size=50257)
    assert torch.equal(
        generate(model, ids, 20), generate(model, ids, 20, use_cache=False)
    )


def test_a_prompt_longer_than_the_context_uses_its_last_positions(model):
    ids = prompt(tokens=40)
    assert torch.equal(
        generate(model, ids, 5), generate(model, ids, 5, use_cache=False)
    )


def test_sampling_with_the_same_generator_draws_the_same_tokens(model):
    ids = prompt()
    options = dict(temperature=1.2, top_k=20, top_p=0.95)
    runs = [
        generate(
            model,
            ids,
            15,
            generator=torch.Generator().manual_seed(4),
            use_cache=use_cache,
            **options,
        )
        for use_cache in (True, False)
    ]
    assert torch.equal(*runs)


def test_end_of_text_stops_and_pads_like_the_uncached_loop(model):
    ids = prompt(batch=3)
    # the first sequence ends at once
    eos = int(generate(model, ids, 1)[0, -1])
    cached = generate(model, ids, 10, eos_id=eos)
    assert torch.equal(cached, generate(model, ids, 10, eos_id=eos, use_cache=False))
    assert (cached[0, 5:] == eos).all()


def test_reset_and_truncate_let_the_cache_serve_new_text(model):
    ids = prompt(batch=1, tokens=8)
    cache = KVCache(model, batch_size=1)
    with torch.no_grad():
        model(prompt(batch=1, tokens=8, seed=9), cache=cache)
        cache.reset()
        assert cache.length == 0
        logits = model(ids, cache=cache)[:, -1]
        torch.testing.assert_close(logits, model(ids)[:, -1], rtol=1e-4, atol=1e-5)
        # keep the first 5 positions and continue differently from there
        cache.truncate(5)
        other = torch.cat([ids[:, :5], prompt(batch=1, tokens=2, seed=3)], dim=1)
        logits = model(other[:, 5:], cache=cache)[:, -1]
        torch.testing.assert_close(logits, model(other)[:, -1], rtol=1e-4, atol=1e-5)
    assert cache.length == 7


def test_bf16_weights_decode_close_to_fp32():
    torch.manual_seed(0)
    cfg = GPT2_CONFIGS["gpt2"].replace(context_length=64, n_layers=4, drop_rate=0.0)
    model = GPTModel(cfg)
    model.init_gpt2_weights()
    model.eval()
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    ids = prompt(batch=1, tokens=10, vocab_size=50257)
    with torch.no_grad():
        reference = model(ids, cache=KVCache(model, 1))[:, -1]
        approximate = bf16(ids, cache=KVCache(bf16, 1))[:, -1].float()
    assert ((approximate - reference).norm() / reference.norm()) < 0.05
    # bf16's choice is among fp32's best
    top = set(reference.topk(5).indices[0].tolist())
    assert approximate.argmax().item() in top
    assert generate(bf16, ids, 5).shape == (1, 15)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda m: KVCache(m, 1, max_tokens=17),
            "max_tokens must be between 1 and the context length 16, got 17",
        ),
        (lambda m: KVCache(m, 0), "batch_size must be at least 1, got 0"),
        (
            lambda m: m(prompt(batch=3), cache=KVCache(m, 2)),
            "the cache holds 2 sequences, got a batch of 3",
        ),
        (
            lambda m: m(prompt(tokens=6), cache=KVCache(m, 2, max_tokens=5)),
            "6 new tokens do not fit: the cache holds 0 of 5 positions",
        ),
        (
            lambda m: m(prompt(), cache=KVCache(GPTModel(m.cfg.replace(n_heads=4)), 2)),
            "the cache holds 4 heads of 8 dimensions, got 2 of 16",
        ),
        (
            lambda m: KVCache(m, 1).truncate(1),
            "length must be between 0 and the 0 positions stored, got 1",
        ),
    ],
)
def test_bad_uses_of_the_cache_are_clear_errors(model, make, message):
    with torch.no_grad(), pytest.raises(ValueError, match=message):
        make(model)


def test_a_failed_step_leaves_the_cache_as_it_was(model):
    cache = KVCache(model, 2, max_tokens=8)
    with torch.no_grad():
        model(prompt(tokens=6), cache=cache)
        with pytest.raises(ValueError, match="do not fit"):
            model(prompt(tokens=3), cache=cache)
    assert [layer.length for layer in cache.layers] == [6, 6]


@pytest.mark.parametrize("count", [1, 2, 3, 40])
@pytest.mark.parametrize(
    ("out_features", "bias", "batch"), [(12, True, 1), (13, False, 2), (7, True, 3)]
)
def test_row_split_linear_computes_the_layer_for_any_thread_count(
    count, out_features, bias, batch
):
    torch.manual_seed(0)
    layer = torch.nn.Linear(10, out_features, bias=bias)
    x = torch.randn(batch, 1, 10)
    # more than one position: the layer itself
    several = torch.randn(batch, 4, 10)
    with threads(count):
        torch.testing.assert_close(row_split_linear(layer, x), layer(x))
        assert torch.equal(row_split_linear(layer, several), layer(several))


def test_cached_generation_works_with_more_threads_than_rows(model):
    ids = prompt()
    # 40 threads, far more than the 32 rows of some layers
    with threads(40):
        cached = generate(model, ids, 6)
    assert torch.equal(cached, generate(model, ids, 6, use_cache=False))


def test_row_split_matvec_keeps_the_logits_and_undoes_itself(model):
    ids = prompt(tokens=1)
    with torch.no_grad():
        plain = model(ids)
        with threads(2), row_split_matvec(model):
            switched = [m for m in model.modules() if "forward" in vars(m)]
            split = model(ids)
    torch.testing.assert_close(split, plain)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert switched == linears
    assert not any("forward" in vars(m) for m in model.modules())


def test_nested_row_split_matvec_leaves_the_outer_switch_in_place(model):
    with row_split_matvec(model):
        with row_split_matvec(model):
            pass
        still_switched = "forward" in vars(model.out_head)
    assert still_switched and "forward" not in vars(model.out_head)


def test_a_quantized_tensor_subclass_weight_keeps_its_own_product():
    torchao_quantization = pytest.importorskip("torchao.quantization")
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(64, 32))
    torchao_quantization.quantize_(layer, torchao_quantization.Int8WeightOnlyConfig())
    assert type(layer[0].weight) not in (torch.Tensor, torch.nn.Parameter)
    x = torch.randn(2, 1, 64)
    with torch.no_grad():
        expected = layer(x)
        with threads(2), row_split_matvec(layer):
            split = layer(x)
    assert torch.equal(split, expected)
