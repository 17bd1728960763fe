"""The two rates that bound this machine's speed, measured in the same run."""

import statistics

import torch

from bench.harness import seconds

MATMUL_SIZE = 2048
# far larger than any cache
COPY_BYTES = 512 * 2**20


def _median_seconds(function, repeats: int = 7) -> float:
    # warm-up
    function()
    return statistics.median(seconds(function) for _ in range(repeats))


def rates() -> dict[str, float]:
    """fp32 and bf16 matrix-multiply rates (FLOP/s) of square 2048 products, and
    the copy bandwidth (bytes copied per second; each is read once, written once)
    and read bandwidth (bytes summed per second) of a 512 MiB buffer."""
    a, b = torch.randn(2, MATMUL_SIZE, MATMUL_SIZE)
    flops = 2 * MATMUL_SIZE**3
    a16, b16 = a.bfloat16(), b.bfloat16()
    source = torch.ones(COPY_BYTES // 4)
    target = torch.empty_like(source)
    return {
        "matmul_fp32_flops": flops / _median_seconds(lambda: torch.mm(a, b)),
        "matmul_bf16_flops": flops / _median_seconds(lambda: torch.mm(a16, b16)),
        "copy_bytes_per_s": COPY_BYTES / _median_seconds(lambda: target.copy_(source)),
        "read_bytes_per_s": COPY_BYTES / _median_seconds(lambda: source.sum()),
    }
