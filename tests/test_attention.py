"""llm.attention.MultiHeadAttention: implementations agree, attention is causal."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llm.attention import IMPLEMENTATIONS, MultiHeadAttention


def make(implementation="sdpa", dropout=0.0, qkv_bias=True, seed=0):
    torch.manual_seed(seed)
    return MultiHeadAttention(
        d_in=32, d_out=48, context_length=16, num_heads=4, dropout=dropout,
        qkv_bias=qkv_bias, implementation=implementation,
    )


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("qkv_bias", [False, True])
def test_explicit_and_sdpa_agree_with_shared_weights(mode, qkv_bias):
    attention = make(qkv_bias=qkv_bias)
    attention.train(mode == "train")  # dropout is 0, so train mode is deterministic too
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
        scores = scores.masked_fill(torch.ones(10, 10, dtype=torch.bool).triu(1), -torch.inf)
        heads.append(torch.softmax(scores, dim=-1) @ v[..., part])
    expected = attention.out_proj(torch.cat(heads, dim=-1))
    assert torch.allclose(attention(x), expected, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    implementation=st.sampled_from(IMPLEMENTATIONS),
    tokens=st.integers(2, 16),
    data=st.data(),
)
def test_changing_later_tokens_never_changes_earlier_outputs(implementation, tokens, data):
    t = data.draw(st.integers(0, tokens - 2), label="last unchanged position")
    attention = make(implementation).eval()
    x = torch.randn(2, tokens, 32)
    changed = x.clone()
    changed[:, t + 1 :] = torch.randn(2, tokens - t - 1, 32) * 10
    before, after = attention(x), attention(changed)
    assert torch.allclose(before[:, : t + 1], after[:, : t + 1], atol=1e-6)
    assert not torch.allclose(before[:, t + 1 :], after[:, t + 1 :])


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
        "qkv.weight", "qkv.bias", "out_proj.weight", "out_proj.bias",
    ]
    assert "mask" not in attention.state_dict()  # derived, so not saved


def test_a_sequence_longer_than_the_context_is_an_error():
    with pytest.raises(ValueError, match="got 17 tokens, more than context_length=16"):
        make()(torch.randn(1, 17, 32))


def test_heads_must_divide_the_output_size():
    with pytest.raises(ValueError, match=r"d_out \(10\) must be divisible by num_heads \(4\)"):
        MultiHeadAttention(d_in=8, d_out=10, context_length=4, num_heads=4)


def test_an_unknown_implementation_is_an_error():
    with pytest.raises(ValueError, match="implementation must be one of"):
        make("flash")
    attention = make()
    with pytest.raises(ValueError, match="implementation must be one of"):
        attention.implementation = "naive"
