"""bench/: the A/B harness and the data comparison (the timings are not tested)."""

import torch

from bench import data, lora
from bench.harness import Comparison, Result, report, run


def test_run_interleaves_both_sides_and_alternates_their_order():
    calls = []
    comparison = Comparison(
        "x", "", lambda: calls.append("ours"), lambda: calls.append("peer"), 1.0
    )
    result = run(comparison, rounds=4, warmup=1)
    assert len(result.ours_seconds) == len(result.peer_seconds) == 4
    assert calls == ["ours", "peer", "peer", "ours"] * 2 + ["ours", "peer"]


def test_ratio_is_peer_median_over_our_median_and_checked_against_the_target():
    result = Result("x", "", [1.0, 2.0, 9.0], [4.0, 6.0, 100.0], target=3.0)
    assert result.ratio == 3.0 and result.passed
    assert not Result("x", "", [1.0], [2.0], target=2.5).passed
    assert "BELOW TARGET" in report([Result("slow", "", [1.0], [2.0], target=2.5)])


def test_the_baseline_builds_the_same_windows_as_the_dataset():
    token_ids = torch.arange(1000)
    inputs, targets = data.copied_windows(
        token_ids.tolist(), context_length=16, stride=5
    )
    ours = data.SlidingWindowDataset(token_ids, 16, 5)
    assert len(inputs) == len(ours)
    for i in (0, 7, len(ours) - 1):
        assert torch.equal(inputs[i], ours[i][0]) and torch.equal(
            targets[i], ours[i][1]
        )


def test_both_attention_paths_compute_the_same_thing():
    from bench.attention import explicit_attention, fused_attention

    q, k, v = (torch.randn(1, 2, 9, 8) for _ in range(3))
    assert torch.allclose(
        explicit_attention(q, k, v), fused_attention(q, k, v), atol=1e-6
    )


def test_a_comparison_can_override_the_number_of_rounds():
    calls = []
    comparison = Comparison(
        "x",
        "",
        lambda: calls.append("ours"),
        lambda: calls.append("peer"),
        1.0,
        rounds=1,
        warmup=0,
    )
    result = run(comparison, rounds=5, warmup=1)
    assert len(result.ours_seconds) == 1 and calls == ["ours", "peer"]


def test_decode_weight_bytes_leave_out_the_embedding_tables():
    from bench.models import matrix_weight_bytes
    from llm.model import GPTConfig, GPTModel

    cfg = GPTConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=1)
    model = GPTModel(cfg)
    everything = sum(p.numel() * 4 for p in model.parameters())
    tables = (50 + 8) * 16 * 4
    assert matrix_weight_bytes(model) == everything - tables


def test_bpe_benchmark_text_has_the_requested_length(mirror):
    from bench.bpe import book_text

    assert len(book_text(200_000)) == 200_000


def test_lora_bench_sides_start_from_the_same_classifier():
    lora_model, full_model = lora.classifier_pair("base model")
    inputs = torch.randint(0, full_model.cfg.vocab_size, (1, 8))
    with torch.no_grad():
        assert torch.equal(lora_model(inputs), full_model(inputs))
    trained = sum(p.numel() for p in lora_model.parameters() if p.requires_grad)
    assert trained < sum(p.numel() for p in full_model.parameters()) / 20


def test_lora_bench_optimizer_state_is_two_floats_per_trained_weight():
    lora_model, _ = lora.classifier_pair("base model")
    trained = sum(p.numel() for p in lora_model.parameters() if p.requires_grad)
    memory = lora.memory_bytes("base model")
    # AdamW keeps exp_avg and exp_avg_sq (float32) plus a scalar step per tensor
    assert 8 * trained <= memory["ours"] < 8 * trained + 4096
    assert memory["peer"] > 20 * memory["ours"]
