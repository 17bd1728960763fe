"""Distributed data parallel on this machine's cores: two processes against one.

Both sides run `llm.distributed` under torchrun, from launch to checkpoint, and
train the same model for the same steps with the same global batch: ours with
two processes of one thread each (gloo over the loopback network), the peer with
one process of two threads. On a two-core machine the ratio is the scaling of
DDP when the processes bring no hardware of their own: the arithmetic is the
same and shares the same cores, and the two processes add an all-reduce of every
gradient per step. So 1.0 ("not slower") is the honest target, not 2.0.
"""

import tempfile
from pathlib import Path

import numpy as np

from bench.harness import Comparison
from llm.distributed import run_locally
from llm.pretrain import gutenberg_token_ids

# The model and training of the chapter page: 6.5 million parameters, batches of
# 16 windows of 64 tokens
OPTIONS = ["--device", "cpu", "--steps", "30", "--global-batch", "16"]
# Tokens of the book's text given to both sides (enough for 30 steps and more)
TRAIN_TOKENS, VALIDATION_TOKENS = 1_000_000, 100_000


def _token_file(folder: Path) -> Path:
    """A slice of the book's token ids as an .npz, so that neither side spends its
    time reading the whole corpus."""
    train_ids, val_ids = gutenberg_token_ids()
    path = folder / "tokens.npz"
    np.savez(
        path,
        train=train_ids[:TRAIN_TOKENS].numpy().astype(np.uint16),
        validation=val_ids[:VALIDATION_TOKENS].numpy().astype(np.uint16),
    )
    return path


def comparisons():
    folder = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    options = [*OPTIONS, "--data", str(_token_file(folder))]

    def processes(count: int):
        def run():
            run_locally(count, *options, "--out", str(folder / f"run{count}"))

        return run

    yield Comparison(
        "DDP: 2 processes vs 1 (2 cores)",
        "30 training steps of a 6.5M-parameter GPT with a global batch of 16x64 "
        "tokens, launch to checkpoint, with torchrun: ours 2 processes x 1 thread "
        "(gloo), peer 1 process x 2 threads. Same cores and same arithmetic, plus "
        "the all-reduce: 1.0 means not slower",
        ours=processes(2),
        peer=processes(1),
        target=1.0,
        rounds=3,
        warmup=0,
    )
