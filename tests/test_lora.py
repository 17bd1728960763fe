"""llm.lora: LoRA layers, wrapping a model, merging, and adapters on their own."""

import json

import pytest
import safetensors.torch
import torch
import torch.nn as nn

from llm.checkpoint import CheckpointError, save_checkpoint
from llm.lora import (
    DEFAULT_TARGETS,
    LoRAEmbedding,
    LoRALinear,
    add_lora,
    load_adapter,
    lora_layers,
    merge_lora,
    save_adapter,
    trainable_parameters,
)
from llm.model import GPT2_CONFIGS, GPTModel


def token_ids(cfg, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(
        0, cfg.vocab_size, (3, cfg.context_length), generator=generator
    )


def randomise_updates(model: nn.Module, seed: int = 2) -> None:
    """Give every A and B a random value, as training would, so that the
    updates count."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            for factor in (layer.A, layer.B):
                factor.copy_(torch.randn(factor.shape, generator=generator) * 0.1)


def test_a_new_lora_layer_computes_exactly_what_its_base_computes():
    torch.manual_seed(0)
    base = nn.Linear(12, 9)
    x = torch.randn(4, 5, 12)
    expected = base(x)
    assert torch.equal(LoRALinear(base, rank=3, alpha=6)(x), expected)


def test_a_model_with_fresh_lora_layers_gives_the_base_models_outputs(make_tiny_model):
    model = make_tiny_model()
    inputs = token_ids(model.cfg)
    with torch.no_grad():
        expected = model(inputs)
        add_lora(model, rank=4, alpha=8, targets=DEFAULT_TARGETS + ("out_head",))
        assert torch.equal(model(inputs), expected)


def test_the_update_is_alpha_over_rank_times_b_times_a():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(6, 4, bias=False), rank=2, alpha=5)
    with torch.no_grad():
        layer.B.copy_(torch.randn(4, 2))
    x = torch.randn(3, 6)
    update = x @ (layer.B @ layer.A).T * (5 / 2)
    assert torch.allclose(layer(x), layer.base(x) + update, atol=1e-6)


def test_each_part_of_a_fused_layer_gets_its_own_update():
    torch.manual_seed(0)
    fused = LoRALinear(nn.Linear(8, 6), rank=2, alpha=4, parts=3)
    with torch.no_grad():
        fused.B.copy_(torch.randn(6, 2))
    x = torch.randn(5, 8)
    for part in range(3):
        rows = slice(2 * part, 2 * part + 2)
        a, b = fused.A[rows], fused.B[rows]
        expected = fused.base(x)[:, rows] + 2.0 * (x @ a.T @ b.T)
        assert torch.allclose(fused(x)[:, rows], expected, atol=1e-6)


def test_a_new_lora_embedding_gives_the_base_tables_rows():
    torch.manual_seed(0)
    base = nn.Embedding(20, 6)
    ids = torch.randint(0, 20, (3, 7))
    assert torch.equal(LoRAEmbedding(base, rank=2, alpha=4)(ids), base(ids))


def test_the_embedding_update_of_a_token_is_alpha_over_rank_b_times_its_column():
    torch.manual_seed(0)
    layer = LoRAEmbedding(nn.Embedding(10, 4), rank=3, alpha=6)
    with torch.no_grad():
        layer.A.copy_(torch.randn(3, 10))
    ids = torch.tensor([[7, 2, 7]])
    expected = layer.base.weight[7] + 2.0 * layer.B @ layer.A[:, 7]
    assert torch.allclose(layer(ids)[0, 0], expected, atol=1e-6)
    assert torch.equal(layer(ids)[0, 0], layer(ids)[0, 2])


def test_an_embedding_step_changes_only_the_rows_of_tokens_in_the_batch():
    torch.manual_seed(0)
    layer = LoRAEmbedding(nn.Embedding(10, 4), rank=2, alpha=2)
    optimizer = torch.optim.AdamW([layer.A, layer.B], lr=0.1)
    layer(torch.tensor([[1, 5]])).pow(2).sum().backward()
    optimizer.step()
    changed = (layer.delta_weight() != 0).any(dim=1)
    assert changed.tolist() == [i in (1, 5) for i in range(10)]


def test_merging_gives_the_same_outputs_as_the_lora_model(make_tiny_model):
    model = make_tiny_model()
    targets = DEFAULT_TARGETS + ("out_head", "tok_emb")
    add_lora(model, rank=4, alpha=8, targets=targets)
    randomise_updates(model)
    inputs = token_ids(model.cfg)
    with torch.no_grad():
        before = model(inputs)
        merge_lora(model)
        after = model(inputs)
    assert not lora_layers(model)
    assert type(model.tok_emb) is nn.Embedding
    assert all(type(m) is not LoRALinear for m in model.modules())
    assert torch.allclose(after, before, atol=1e-5)
    assert not torch.allclose(before, make_tiny_model()(inputs), atol=1e-3)


def test_a_merged_model_saves_as_an_ordinary_checkpoint(make_tiny_model, tmp_path):
    model = make_tiny_model()
    add_lora(model, rank=2, alpha=2)
    randomise_updates(model)
    merge_lora(model)
    assert set(model.state_dict()) == set(make_tiny_model().state_dict())
    save_checkpoint(model, tmp_path / "merged.safetensors")


def test_trainable_counts_on_the_tiny_model(make_tiny_model):
    # emb_dim 32, 2 layers; rank 4: qkv 3 * 4 * (32 + 32), out_proj 4 * (32 + 32),
    # up and down 4 * (32 + 128) each
    per_block = 3 * 4 * 64 + 4 * 64 + 2 * 4 * 160
    assert per_block == 2304
    model = make_tiny_model()
    names = add_lora(model, rank=4, alpha=8)
    assert len(names) == 8
    assert trainable_parameters(model) == 2 * per_block


def test_lora_on_the_token_embedding_trains_rank_times_vocab_plus_width(
    make_tiny_model,
):
    model = make_tiny_model()
    add_lora(model, rank=4, alpha=8, targets=("tok_emb",))
    vocab, width = model.cfg.vocab_size, model.cfg.emb_dim
    assert trainable_parameters(model) == 4 * (vocab + width)
    assert isinstance(model.tok_emb, LoRAEmbedding)


def test_gpt2_small_classifier_with_rank_16_everywhere_trains_2_666_528():
    # The reference book's count: rank 16 on every linear layer of GPT-2 small
    # (query, key and value counted as three layers) and on its 768 -> 2 head
    with torch.device("meta"):
        model = GPTModel(GPT2_CONFIGS["gpt2"].replace(qkv_bias=True))
        model.out_head = nn.Linear(768, 2)
    assert sum(p.numel() for p in model.parameters()) == 124_441_346
    add_lora(model, rank=16, alpha=16, targets=DEFAULT_TARGETS + ("out_head",))
    assert trainable_parameters(model) == 2_666_528


def test_only_lora_parameters_and_the_named_modules_require_grad(make_tiny_model):
    model = make_tiny_model()
    model.out_head = nn.Linear(32, 2)
    add_lora(model, rank=2, alpha=4, trainable=("out_head",))
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    lora = {f"{name}.{kind}" for name in lora_layers(model) for kind in "AB"}
    assert trained == lora | {"out_head.weight", "out_head.bias"}


@pytest.mark.parametrize("rank", [0, -2, 2.5, "8", True, None])
def test_a_bad_rank_is_a_value_error(rank):
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        LoRALinear(nn.Linear(4, 4), rank=rank, alpha=8)


@pytest.mark.parametrize("alpha", [0, -1.0, float("nan"), float("inf"), "16", None])
def test_a_bad_alpha_is_a_value_error(alpha):
    with pytest.raises(ValueError, match="alpha must be a positive number"):
        LoRALinear(nn.Linear(4, 4), rank=4, alpha=alpha)


def test_add_lora_checks_its_arguments_before_changing_the_model(make_tiny_model):
    model = make_tiny_model()
    with pytest.raises(ValueError, match="rank"):
        add_lora(model, rank=0, alpha=8)
    with pytest.raises(ValueError, match="targets"):
        add_lora(model, rank=2, alpha=8, targets=("query",))
    with pytest.raises(ValueError, match="targets"):
        add_lora(model, rank=2, alpha=8, targets="qkv")
    with pytest.raises(ValueError, match="trainable must be a collection"):
        add_lora(model, rank=2, alpha=8, trainable="out_head")
    with pytest.raises(ValueError, match="trainable must be a collection"):
        add_lora(model, rank=2, alpha=8, trainable=("",))
    with pytest.raises(ValueError, match="no module named"):
        add_lora(model, rank=2, alpha=8, trainable=("classifier",))
    assert not lora_layers(model)
    assert all(p.requires_grad for p in model.parameters())
    add_lora(model, rank=2, alpha=8)
    with pytest.raises(ValueError, match="already has LoRA layers"):
        add_lora(model, rank=2, alpha=8)


def test_an_adapter_reloaded_on_a_fresh_base_model_gives_the_same_outputs(
    make_tiny_model, tmp_path
):
    model = make_tiny_model()
    model.out_head = nn.Linear(32, 2)
    targets = DEFAULT_TARGETS + ("tok_emb",)
    add_lora(model, rank=4, alpha=8, targets=targets, trainable=("out_head",))
    randomise_updates(model)
    with torch.no_grad():
        model.out_head.weight.mul_(3.0)
    path = save_adapter(model, tmp_path / "adapter.safetensors")

    fresh = make_tiny_model()
    fresh.out_head = nn.Linear(32, 2)
    load_adapter(path, fresh)
    inputs = token_ids(model.cfg)
    with torch.no_grad():
        assert torch.equal(fresh(inputs), model(inputs))
    trained = {name for name, p in fresh.named_parameters() if p.requires_grad}
    assert trained == {name for name, p in model.named_parameters() if p.requires_grad}
    assert {name: layer.rank for name, layer in lora_layers(fresh).items()} == {
        name: 4 for name in lora_layers(model)
    }


def test_an_adapter_holds_only_the_trained_tensors(make_tiny_model, tmp_path):
    model = make_tiny_model()
    add_lora(model, rank=4, alpha=8)
    path = save_adapter(model, tmp_path / "adapter.safetensors")
    saved = safetensors.torch.load_file(path)
    assert set(saved) == {
        f"{name}.{kind}" for name in lora_layers(model) for kind in "AB"
    }
    assert sum(t.numel() for t in saved.values()) == trainable_parameters(model)


def test_an_adapter_for_another_shape_is_refused_and_changes_nothing(
    make_tiny_model, tmp_path
):
    model = make_tiny_model()
    add_lora(model, rank=4, alpha=8)
    path = save_adapter(model, tmp_path / "adapter.safetensors")
    wider = make_tiny_model(emb_dim=64)
    before = {name: p.clone() for name, p in wider.state_dict().items()}
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_adapter(path, wider)
    assert not lora_layers(wider)
    assert all(torch.equal(before[name], p) for name, p in wider.state_dict().items())
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_adapter(path, make_tiny_model(n_layers=1))


def test_loading_files_that_are_not_adapters_fails_clearly(make_tiny_model, tmp_path):
    model = make_tiny_model()
    checkpoint = save_checkpoint(model, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="not a LoRA adapter"):
        load_adapter(checkpoint, make_tiny_model())
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_adapter(tmp_path / "missing.safetensors", make_tiny_model())
    bad = tmp_path / "bad.safetensors"
    metadata = {
        "format": "llm-from-scratch-book/lora-1",
        "layers": json.dumps({"x": 1}),
    }
    safetensors.torch.save_file({"x.A": torch.zeros(1)}, bad, metadata)
    with pytest.raises(CheckpointError, match="malformed"):
        load_adapter(bad, make_tiny_model())


def test_saving_a_model_without_lora_layers_is_a_value_error(make_tiny_model, tmp_path):
    with pytest.raises(ValueError, match="add_lora"):
        save_adapter(make_tiny_model(), tmp_path / "adapter.safetensors")
    assert not (tmp_path / "adapter.safetensors").exists()
