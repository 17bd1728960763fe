"""llm.attention.MultiHeadAttention: implementations agree, attention is causal,
no mask is stored, and a cache of earlier keys and values changes nothing."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from llm.attention import IMPLEMENTATIONS, MultiHeadAttention, future_mask
from llm.kv_cache import LayerCache


def make(implementation="sdpa", dropout=0.0, qkv_bias=True, seed=0, context_length=16):
    torch.manual_seed(seed)
    return MultiHeadAttention(
        d_in=32,
        d_out=48,
        context_length=context_length,
        num_heads=4,
        dropout=dropout,
        qkv_bias=qkv_bias,
        implementation=implementation,
    )


def empty_cache(batch=2, max_tokens=16):
    """A cache for `make()`'s shape: 4 heads of 12 dimensions."""
    return LayerCache(
        torch.zeros(batch, 4, max_tokens, 12), torch.zeros(batch, 4, max_tokens, 12)
    )


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("qkv_bias", [False, True])
def test_explicit_and_sdpa_agree_with_shared_weights(mode, qkv_bias):
    attention = make(qkv_bias=qkv_bias)
    # dropout is 0, so train mode is deterministic too
    attention.train(mode == "train")
    x = torch.randn(3, 16, 32)
    outputs = {}
    for implementation in IMPLEMENTATIONS:
        attention.implementation = implementation
        outputs[implementation] = attention(x)
    assert torch.allclose(outputs["sdpa"], outputs["explicit"], atol=1e-6)


def test_the_fused_projection_equals_separate_single_heads():
    """Head h of the fused module is plain scaled dot-product attention on its slice."""
    attention = make(implementation="explicit").eval()
    x = torch.randn(2, 10, 32)
    q, k, v = attention.qkv(x).split(48, dim=-1)
    heads = []
    for h in range(4):
        part = slice(12 * h, 12 * (h + 1))
        scores = q[..., part] @ k[..., part].transpose(1, 2) / 12**0.5
        future = torch.ones(10, 10, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(future, -torch.inf)
        heads.append(torch.softmax(scores, dim=-1) @ v[..., part])
    expected = attention.out_proj(torch.cat(heads, dim=-1))
    assert torch.allclose(attention(x), expected, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    implementation=st.sampled_from(IMPLEMENTATIONS),
    tokens=st.integers(2, 16),
    data=st.data(),
)
def test_changing_later_tokens_never_changes_earlier_outputs(
    implementation, tokens, data
):
    t = data.draw(st.integers(0, tokens - 2), label="last unchanged position")
    attention = make(implementation).eval()
    x = torch.randn(2, tokens, 32)
    changed = x.clone()
    changed[:, t + 1 :] = torch.randn(2, tokens - t - 1, 32) * 10
    before, after = attention(x), attention(changed)
    assert torch.allclose(before[:, : t + 1], after[:, : t + 1], atol=1e-6)
    assert not torch.allclose(before[:, t + 1 :], after[:, t + 1 :])


def test_no_context_sized_mask_is_kept_in_memory():
    attention = make(context_length=4096)
    assert list(attention.buffers()) == []
    assert "mask" not in attention.state_dict()


def test_the_fused_kernel_applies_causality_itself(monkeypatch):
    calls = []
    fused = F.scaled_dot_product_attention

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return fused(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    make().eval()(torch.randn(1, 7, 32))
    assert calls[0]["attn_mask"] is None and calls[0]["is_causal"] is True


def test_the_future_mask_hides_keys_after_each_query():
    assert future_mask(3).tolist() == [
        [False, True, True],
        [False, False, True],
        [False, False, False],
    ]
    # two new tokens after three known ones: the first sees keys 0-3, the second 0-4
    assert future_mask(2, offset=3).int().tolist() == [[0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]


@settings(max_examples=30, deadline=None)
@given(
    implementation=st.sampled_from(IMPLEMENTATIONS),
    chunks=st.lists(st.integers(1, 6), min_size=1, max_size=6),
)
def test_feeding_positions_in_chunks_through_a_cache_equals_all_at_once(
    implementation, chunks
):
    attention = make(implementation).eval()
    total = min(sum(chunks), 16)
    x = torch.randn(2, total, 32)
    cache, outputs, start = empty_cache(), [], 0
    with torch.no_grad():
        for size in chunks:
            if start >= total:
                break
            outputs.append(attention(x[:, start : start + size], cache))
            start += size
        expected = attention(x)
    assert cache.length == total
    torch.testing.assert_close(
        torch.cat(outputs, dim=1), expected, atol=1e-5, rtol=1e-4
    )


def test_with_a_cache_eval_mode_ignores_the_dropout_rate():
    attention = make(dropout=0.5).eval()
    x = torch.randn(1, 6, 32)
    cache = empty_cache(batch=1)
    with torch.no_grad():
        attention(x[:, :3], cache)
        cached = attention(x[:, 3:], cache)
    torch.testing.assert_close(cached, attention(x)[:, 3:], atol=1e-5, rtol=1e-4)


def test_eval_mode_is_deterministic_even_with_dropout():
    attention = make(dropout=0.5).eval()
    x = torch.randn(2, 8, 32)
    assert torch.equal(attention(x), attention(x))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_dropout_acts_in_train_mode(implementation):
    attention = make(implementation, dropout=0.5).train()
    x = torch.randn(2, 8, 32)
    assert not torch.equal(attention(x), attention(x))


def test_output_shape_and_parameter_names():
    attention = make()
    assert attention(torch.randn(4, 7, 32)).shape == (4, 7, 48)
    assert [name for name, _ in attention.named_parameters()] == [
        "qkv.weight",
        "qkv.bias",
        "out_proj.weight",
        "out_proj.bias",
    ]


def test_a_sequence_longer_than_the_context_is_an_error():
    with pytest.raises(
        ValueError, match="got 17 tokens after 0 cached ones, more than"
    ):
        make()(torch.randn(1, 17, 32))


def test_cached_and_new_positions_together_may_not_exceed_the_context():
    attention = make().eval()
    cache = empty_cache(batch=1)
    with torch.no_grad():
        attention(torch.randn(1, 10, 32), cache)
        with pytest.raises(ValueError, match="got 7 tokens after 10 cached ones"):
            attention(torch.randn(1, 7, 32), cache)


def test_heads_must_divide_the_output_size():
    with pytest.raises(
        ValueError, match=r"d_out \(10\) must be divisible by num_heads \(4\)"
    ):
        MultiHeadAttention(d_in=8, d_out=10, context_length=4, num_heads=4)


def test_an_unknown_implementation_is_an_error():
    with pytest.raises(ValueError, match="implementation must be one of"):
        make("flash")
    attention = make()
    with pytest.raises(ValueError, match="implementation must be one of"):
        attention.implementation = "naive"
