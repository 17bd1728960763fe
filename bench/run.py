"""Run the benchmarks, print each ratio next to its target, save the results.

    python -m bench.run              # all comparisons
    python -m bench.run data bpe     # only some groups (see GROUPS below)

Results go to bench/results/latest.json (machine-readable), which the book's
performance appendix reads and the package ships as the data of
`llm_bench_results` (see pyproject.toml); the exit status is 0 even when a target
is missed, since benchmarks measure, they do not gate.
"""

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

from bench import (
    attention,
    bpe,
    data,
    distributed,
    generation,
    hardware,
    lora,
    quantize,
    serving,
    training,
)
from bench.harness import report, run

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
GROUPS = {
    "data": data,
    "bpe": bpe,
    "attention": attention,
    "training": training,
    "generation": generation,
    "lora": lora,
    "serving": serving,
    "quantize": quantize,
    "distributed": distributed,
}


def _previous_results() -> dict:
    if RESULTS.exists():
        return json.loads(RESULTS.read_text(encoding="utf-8"))
    return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="*", help=f"only these: {', '.join(GROUPS)}")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    unknown = set(args.groups) - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups {sorted(unknown)}; choose from {list(GROUPS)}")
    chosen = [name for name in GROUPS if not args.groups or name in args.groups]

    torch.set_num_threads(args.threads)
    machine_rates = hardware.rates()
    print(
        f"machine: fp32 matmul {machine_rates['matmul_fp32_flops'] / 1e9:.0f} GFLOP/s, "
        f"bf16 matmul {machine_rates['matmul_bf16_flops'] / 1e9:.0f} GFLOP/s, "
        f"copy {machine_rates['copy_bytes_per_s'] / 1e9:.1f} GB/s, "
        f"read {machine_rates['read_bytes_per_s'] / 1e9:.1f} GB/s"
    )
    results = []
    # one group at a time, so its models are freed after it
    for name in chosen:
        for comparison in GROUPS[name].comparisons():
            result = run(comparison, rounds=args.rounds, threads=args.threads)
            print(report([result]).splitlines()[-1], flush=True)
            results.append((name, result))
    print()
    print(report([result for _, result in results]))
    memory = data.memory_bytes() if "data" in chosen else None
    if memory:
        print(
            f"\nwindow memory: ours {memory['ours'] / 1e6:.1f} MB, "
            f"copied windows {memory['peer'] / 1e6:.1f} MB"
        )

    lora_memory = lora.memory_bytes() if "lora" in chosen else None
    if lora_memory:
        print(
            f"optimizer state, GPT-2 small classifier: LoRA "
            f"{lora_memory['ours'] / 2**20:.1f} MiB, full finetuning "
            f"{lora_memory['peer'] / 2**20:.1f} MiB"
        )

    quantize_loss = quantize.validation_loss_change() if "quantize" in chosen else None
    if quantize_loss:
        print(
            f"base model validation loss: fp32 {quantize_loss['float32']:.4f}, "
            f"int8 {quantize_loss['int8']:.4f} ({quantize_loss['change']:+.3%}), "
            f"torchao {quantize_loss['torchao']:.4f} "
            f"({quantize_loss['torchao_change']:+.3%})"
        )

    # Groups not run this time keep their previous results.
    previous = _previous_results()
    fresh = [{"group": name, **result.as_dict()} for name, result in results]
    fresh_names = {r["name"] for r in fresh}
    kept = [
        r
        for r in previous.get("results", [])
        if r.get("group") not in chosen and r["name"] not in fresh_names
    ]
    order = {name: i for i, name in enumerate(GROUPS)}
    merged = sorted(kept + fresh, key=lambda r: order.get(r.get("group"), len(order)))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": {
                    "platform": platform.platform(),
                    "torch": torch.__version__,
                    "threads": args.threads,
                    "cpu_count": os.cpu_count(),
                    **machine_rates,
                },
                "results": merged,
                "memory_bytes": memory or previous.get("memory_bytes"),
                "lora_optimizer_bytes": lora_memory
                or previous.get("lora_optimizer_bytes"),
                "quantize_validation_loss": quantize_loss
                or previous.get("quantize_validation_loss"),
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"results written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
