"""llm.quantize: per-row int8 quantization, the Int8Linear layer, quantizing a
model, its memory, and generation with the quantized model."""

import copy

import pytest
import torch
import torch.nn as nn

from llm.generate import generate
from llm.kv_cache import row_split_matvec
from llm.quantize import (
    Int8Linear,
    dequantize_per_channel,
    quantize_model,
    quantize_per_channel,
    weight_bytes,
)


def uneven_weight(rows: int = 24, columns: int = 48, seed: int = 0) -> torch.Tensor:
    """Random rows of very different sizes, one of them all zeros."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, columns, generator=generator)
    weight *= torch.logspace(-3, 1, rows)[:, None]
    weight[5] = 0.0
    return weight


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def float_layer(in_features: int, out_features: int, bias: bool = True, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features, bias=bias)


def test_round_trip_error_is_at_most_half_a_scale_in_every_row():
    weight = uneven_weight()
    q, scales = quantize_per_channel(weight)
    error = (weight - dequantize_per_channel(q, scales)).abs()
    assert bool((error <= scales[:, None] / 2 * (1 + 1e-6)).all())


def test_each_rows_largest_weight_maps_to_127_and_scales_are_float32_per_row():
    weight = uneven_weight()
    q, scales = quantize_per_channel(weight)
    assert q.dtype == torch.int8 and q.shape == weight.shape
    assert scales.dtype == torch.float32 and scales.shape == (weight.shape[0],)
    nonzero = [row for row in range(weight.shape[0]) if row != 5]
    assert q[nonzero].abs().amax(dim=1).tolist() == [127] * len(nonzero)
    assert int(q.min()) >= -127
    torch.testing.assert_close(scales[nonzero], weight[nonzero].abs().amax(dim=1) / 127)


def test_a_row_of_zeros_gets_scale_one_and_zero_codes():
    q, scales = quantize_per_channel(uneven_weight())
    assert float(scales[5]) == 1.0
    assert q[5].abs().sum() == 0


@pytest.mark.parametrize(
    "bad, error, words",
    [
        (torch.zeros(3, 4, 5), ValueError, "2-D"),
        (torch.zeros(4), ValueError, "2-D"),
        (torch.zeros(3, 4, dtype=torch.int8), TypeError, "already quantized"),
        (torch.zeros(3, 4, dtype=torch.long), TypeError, "floating-point"),
        ([[1.0, 2.0]], TypeError, "torch.Tensor"),
        (torch.tensor([[1.0, float("nan")]]), ValueError, "NaN"),
    ],
)
def test_bad_weights_are_refused_with_a_message_naming_the_problem(bad, error, words):
    with pytest.raises(error, match=words):
        quantize_per_channel(bad)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rows", [1, 3, 64])
def test_int8_linear_output_is_close_to_the_float_layer(bias, rows):
    layer = float_layer(64, 48, bias=bias)
    quantized = Int8Linear.from_linear(layer)
    x = torch.randn(rows, 2, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = layer(x), quantized(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert relative_difference(got, expected) < 0.02


def test_the_kernel_path_and_the_dequantized_path_agree():
    quantized = Int8Linear.from_linear(float_layer(64, 40))
    x = torch.randn(1, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        kernel = quantized(x)
        quantized.kernel_max_rows = 0
        dequantized = quantized(x)
    exact = x @ quantized.dequantize().T + quantized.bias
    torch.testing.assert_close(dequantized, exact.detach())
    assert relative_difference(kernel, dequantized) < 0.01


def test_an_input_size_that_is_not_a_multiple_of_16_still_gives_right_outputs():
    # the CPU kernel would read past the rows; the layer must not use it
    layer = float_layer(40, 24)
    quantized = Int8Linear.from_linear(layer)
    x = torch.randn(1, 40, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert relative_difference(quantized(x), layer(x)) < 0.02


def test_inputs_that_need_gradients_get_them():
    quantized = Int8Linear.from_linear(float_layer(32, 16))
    x = torch.randn(1, 32, requires_grad=True)
    quantized(x).sum().backward()
    expected = quantized.dequantize().sum(dim=0)
    torch.testing.assert_close(x.grad[0], expected)


def test_int8_linear_refuses_a_wrong_input_size_and_bad_layers():
    quantized = Int8Linear.from_linear(float_layer(32, 16))
    with pytest.raises(ValueError, match="takes 32 features"):
        quantized(torch.zeros(1, 31))
    with pytest.raises(ValueError, match="already an Int8Linear"):
        Int8Linear.from_linear(quantized)
    with pytest.raises(TypeError, match="nn.Linear"):
        Int8Linear.from_linear(nn.Conv1d(3, 3, 1))


def test_the_state_dict_holds_int8_weights_and_reloads_to_the_same_layer():
    quantized = Int8Linear.from_linear(float_layer(32, 16))
    state = quantized.state_dict()
    assert state["weight"].dtype == torch.int8
    assert set(state) == {"weight", "scales", "bias"}
    fresh = Int8Linear(32, 16)
    fresh.load_state_dict(state)
    x = torch.randn(2, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), quantized(x))


def linear_names(model: nn.Module, kind) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, kind)]


def test_quantize_model_replaces_exactly_the_linear_layers(make_tiny_model):
    model = make_tiny_model()
    before = linear_names(model, nn.Linear)
    quantize_model(model)
    assert linear_names(model, Int8Linear) == before
    assert linear_names(model, nn.Linear) == []
    assert isinstance(model.tok_emb, nn.Embedding)
    assert model.tok_emb.weight.dtype == torch.float32


def test_quantize_model_leaves_the_skipped_layers_in_float(make_tiny_model):
    model = make_tiny_model()
    skip = ("out_head", "blocks.1.ff.down")
    quantize_model(model, skip=skip)
    assert sorted(linear_names(model, nn.Linear)) == sorted(skip)
    assert len(linear_names(model, Int8Linear)) == 2 * 4 - 1


def test_quantize_model_refuses_bad_requests_with_clear_errors(make_tiny_model):
    model = make_tiny_model()
    with pytest.raises(ValueError, match="does not have"):
        quantize_model(model, skip=("out_hed",))
    with pytest.raises(ValueError, match="no nn.Linear"):
        quantize_model(nn.Sequential(nn.ReLU()))
    with pytest.raises(TypeError, match="nn.Module"):
        quantize_model(model.state_dict())
    quantize_model(model)
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(model)


def test_weight_bytes_count_int8_numbers_scales_and_float_parameters_exactly(
    make_tiny_model,
):
    model = make_tiny_model()
    float_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert weight_bytes(model) == float_bytes
    saved = 0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            rows, columns = module.weight.shape
            # 4 bytes per weight become 1, plus a 4-byte scale per row
            saved += 4 * rows * columns - (rows * columns + 4 * rows)
    quantize_model(model)
    assert weight_bytes(model) == float_bytes - saved


def test_the_quantized_model_generates_the_float_models_greedy_tokens_with_the_cache(
    make_tiny_model,
):
    model = make_tiny_model(seed=3)
    model.init_gpt2_weights()
    quantized = quantize_model(copy.deepcopy(model))
    prompt = torch.tensor([[1, 5, 9, 2]])
    expected = generate(model, prompt, 8, use_cache=True)
    got = generate(quantized, prompt, 8, use_cache=True)
    assert got.tolist() == expected.tolist()
    # stated tolerance: every logit within 5% of the largest float logit
    with torch.no_grad():
        logits, float_logits = quantized(expected), model(expected)
    assert (logits - float_logits).abs().max() < 0.05 * float_logits.abs().max()


def test_row_split_matvec_leaves_int8_linear_alone(make_tiny_model):
    model = quantize_model(make_tiny_model())
    x = torch.randn(1, 1, model.cfg.emb_dim)
    layer = model.blocks[0].ff.up
    with torch.no_grad():
        outside = layer(x)
        with row_split_matvec(model):
            assert "forward" not in vars(layer)
            inside = layer(x)
    torch.testing.assert_close(inside, outside, rtol=0, atol=0)


def test_decoding_with_the_cache_runs_every_int8_layer_through_its_own_forward(
    make_tiny_model, monkeypatch
):
    model = quantize_model(make_tiny_model())
    calls = []
    original = Int8Linear.forward

    def counting(self, x):
        calls.append(x.shape[:-1])
        return original(self, x)

    monkeypatch.setattr(Int8Linear, "forward", counting)
    generate(model, torch.tensor([[1, 2, 3]]), 4, use_cache=True)
    # 4 layers per block, 2 blocks, and the head, for each of the 4 passes
    assert len(calls) == 4 * (2 * 4 + 1)
    assert calls[-1] == (1, 1)
