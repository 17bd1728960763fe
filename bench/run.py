"""Run the benchmarks, print each ratio next to its target, save the results.

    python -m bench.run              # all comparisons
    python -m bench.run data         # only some groups: data, attention, training

Results go to bench/results/latest.json (machine-readable); the exit status is 0
even when a target is missed, since benchmarks measure, they do not gate.
"""

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from bench import attention, data, training
from bench.harness import report, run

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "groups", nargs="*", help="only these: data, attention, training"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    modules = {"data": data, "attention": attention, "training": training}
    unknown = set(args.groups) - set(modules)
    if unknown:
        parser.error(f"unknown groups {sorted(unknown)}; choose from {list(modules)}")
    chosen = [
        m for name, m in modules.items() if not args.groups or name in args.groups
    ]
    selected = [comparison for module in chosen for comparison in module.comparisons()]
    results = [
        run(comparison, rounds=args.rounds, threads=args.threads)
        for comparison in selected
    ]
    print(report(results))
    memory = data.memory_bytes() if data in chosen else None
    if memory:
        print(
            f"\nwindow memory: ours {memory['ours'] / 1e6:.1f} MB, "
            f"copied windows {memory['peer'] / 1e6:.1f} MB"
        )

    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": {
                    "platform": platform.platform(),
                    "processor": platform.processor(),
                    "torch": torch.__version__,
                    "threads": args.threads,
                },
                "results": [result.as_dict() for result in results],
                "memory_bytes": memory,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print(
        f"results written to {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
