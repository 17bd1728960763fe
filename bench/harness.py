"""A small A/B benchmark harness: interleaved rounds, medians, a ratio and its target.

Machines are noisy (absolute times drift by tens of percent between runs), so a
comparison times our code and its peer alternately in the same process, with a
fixed number of threads, and reports the ratio of the medians. The order within
a round alternates too, so that neither side always runs on a warm cache.
"""

import dataclasses
import statistics
import time
from collections.abc import Callable

import torch


@dataclasses.dataclass(frozen=True)
class Comparison:
    """`ours` and `peer` do the same work; `target` is the least acceptable
    speed-up, peer time / our time (1.0: at least as fast as the peer)."""

    name: str
    description: str
    ours: Callable[[], object]
    peer: Callable[[], object]
    target: float
    # overrides the run's rounds (for very slow peers)
    rounds: int | None = None
    warmup: int | None = None


@dataclasses.dataclass(frozen=True)
class Result:
    name: str
    description: str
    ours_seconds: list[float]
    peer_seconds: list[float]
    target: float

    @property
    def ratio(self) -> float:
        """Median peer time over median time of ours: above 1, ours is faster."""
        return statistics.median(self.peer_seconds) / statistics.median(
            self.ours_seconds
        )

    @property
    def passed(self) -> bool:
        return self.ratio >= self.target

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "ours_median_s": statistics.median(self.ours_seconds),
            "peer_median_s": statistics.median(self.peer_seconds),
            "ratio": self.ratio,
            "target": self.target,
            "passed": self.passed,
            "ours_s": self.ours_seconds,
            "peer_s": self.peer_seconds,
        }


def seconds(function: Callable[[], object]) -> float:
    """How long one call of `function` takes."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def run(
    comparison: Comparison, rounds: int = 5, warmup: int = 1, threads: int = 2
) -> Result:
    """Time both sides `rounds` times after `warmup` untimed rounds, interleaved."""
    rounds = comparison.rounds if comparison.rounds is not None else rounds
    warmup = comparison.warmup if comparison.warmup is not None else warmup
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    torch.set_num_threads(threads)
    ours, peer = [], []
    for round_number in range(warmup + rounds):
        order = [(comparison.ours, ours), (comparison.peer, peer)]
        if round_number % 2:
            order.reverse()
        for function, times in order:
            elapsed = seconds(function)
            if round_number >= warmup:
                times.append(elapsed)
    return Result(
        comparison.name, comparison.description, ours, peer, comparison.target
    )


def report(results: list[Result]) -> str:
    """A plain-text table: medians, the ratio, its target, and whether it holds."""
    lines = [
        f"{'comparison':34} {'ours':>10} {'peer':>10} {'ratio':>8} {'target':>8}"
        "  result"
    ]
    for result in results:
        summary = result.as_dict()
        lines.append(
            f"{result.name:34} {summary['ours_median_s'] * 1e3:8.1f}ms "
            f"{summary['peer_median_s'] * 1e3:8.1f}ms {result.ratio:7.2f}x "
            f"{result.target:7.2f}x  {'ok' if result.passed else 'BELOW TARGET'}"
        )
    return "\n".join(lines)
