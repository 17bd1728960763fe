"""Sliding-window datasets and data loaders for next-token prediction."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from llm.data import SlidingWindowDataset, create_dataloader
from llm.datasets import read_text
from llm.tokenizer import SimpleTokenizer, build_vocab, gpt2_tokenizer


def storage(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def test_windows_and_targets_are_shifted_by_one_token():
    dataset = SlidingWindowDataset(list(range(10)), context_length=4, stride=3)
    assert len(dataset) == 2
    assert [x.tolist() for x, _ in dataset] == [[0, 1, 2, 3], [3, 4, 5, 6]]
    assert [y.tolist() for _, y in dataset] == [[1, 2, 3, 4], [4, 5, 6, 7]]


@given(
    n_tokens=st.integers(2, 300),
    context_length=st.integers(1, 40),
    stride=st.integers(1, 50),
)
def test_window_count_and_contents_follow_the_formula(n_tokens, context_length, stride):
    if n_tokens < context_length + 1:
        return
    tokens = torch.arange(n_tokens)
    dataset = SlidingWindowDataset(tokens, context_length, stride)
    assert len(dataset) == (n_tokens - 1 - context_length) // stride + 1
    last_input, last_target = dataset[len(dataset) - 1]
    start = (len(dataset) - 1) * stride
    assert torch.equal(last_input, tokens[start : start + context_length])
    assert torch.equal(last_target, tokens[start + 1 : start + context_length + 1])


def test_items_are_views_of_one_token_tensor_not_copies():
    dataset = SlidingWindowDataset(torch.arange(1000), context_length=64, stride=1)
    base = storage(dataset.tokens)
    x, y = dataset[500]
    assert (
        storage(dataset.inputs)
        == storage(dataset.targets)
        == storage(x)
        == storage(y)
        == base
    )
    # one int64 per token, whatever the stride
    assert dataset.inputs.untyped_storage().nbytes() == 1000 * 8


def test_a_long_tensor_of_ids_is_used_without_a_copy():
    tokens = torch.arange(100)
    assert storage(SlidingWindowDataset(tokens, 8, 8).tokens) == storage(tokens)


def test_text_shorter_than_one_window_is_a_clear_error():
    with pytest.raises(
        ValueError,
        match=r"the text has 4 tokens, but one window needs context_length \+ 1 = 5",
    ):
        SlidingWindowDataset([1, 2, 3, 4], context_length=4, stride=1)


@pytest.mark.parametrize("name", ["context_length", "stride"])
@pytest.mark.parametrize("value", [0, -3, 1.5])
def test_window_and_stride_must_be_positive_integers(name, value):
    arguments = {"context_length": 4, "stride": 2, name: value}
    with pytest.raises(
        ValueError, match=f"{name} must be a positive integer, got {value!r}"
    ):
        SlidingWindowDataset(list(range(20)), **arguments)


def test_token_ids_must_be_one_sequence():
    with pytest.raises(ValueError, match=r"1-D\), got shape \(2, 10\)"):
        SlidingWindowDataset(
            torch.zeros(2, 10, dtype=torch.long), context_length=4, stride=1
        )


@pytest.mark.parametrize(
    "token_ids",
    [
        [1.0, 2.0, 3.0, 4.0, 5.0],
        [1.7, 2.2, 3.9, 4.0, 5.5],
        torch.arange(5.0),
        [True] * 5,
    ],
    ids=["whole floats", "fractions", "float tensor", "booleans"],
)
def test_token_ids_that_are_not_integers_are_a_clear_error(token_ids):
    with pytest.raises(ValueError, match="token ids must be integers, got torch"):
        SlidingWindowDataset(token_ids, context_length=2, stride=1)


def test_negative_token_ids_are_a_clear_error_naming_the_first_one():
    message = "token ids must not be negative, got -7 at position 3"
    with pytest.raises(ValueError, match=message):
        SlidingWindowDataset([4, 5, 6, -7, 8, -1], context_length=2, stride=1)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.uint16])
def test_integer_ids_of_any_width_are_accepted_as_int64(dtype):
    dataset = SlidingWindowDataset(
        torch.arange(6).to(dtype), context_length=2, stride=2
    )
    assert dataset.tokens.dtype == torch.long
    assert dataset[1][0].tolist() == [2, 3] and dataset[1][1].tolist() == [3, 4]


def test_dataloader_batches_have_the_requested_shape_and_drop_the_rest(mirror):
    text = read_text("the-verdict.txt")
    loader = create_dataloader(
        text, batch_size=8, context_length=4, stride=4, shuffle=False
    )
    inputs, targets = next(iter(loader))
    assert inputs.shape == targets.shape == (8, 4)
    assert inputs[0].tolist() == [40, 367, 2885, 1464]
    n_windows = (len(gpt2_tokenizer().encode(text)) - 1 - 4) // 4 + 1
    assert len(loader.dataset) == n_windows and len(loader) == n_windows // 8


def test_dataloader_allows_end_of_text_between_documents(mirror):
    loader = create_dataloader(
        "one <|endoftext|> two three four",
        batch_size=1,
        context_length=2,
        stride=1,
        shuffle=False,
    )
    assert loader.dataset.tokens.tolist() == [505, 220, 50256, 734, 1115, 1440]


def test_dataloader_shuffling_is_reproducible_with_a_seed(mirror):
    text = " ".join(str(i) for i in range(300))

    def first_batch(seed):
        return next(
            iter(
                create_dataloader(
                    text, batch_size=4, context_length=8, stride=8, seed=seed
                )
            )
        )[0]

    assert torch.equal(first_batch(1), first_batch(1))
    assert not torch.equal(first_batch(1), first_batch(2))


def test_dataloader_accepts_another_tokenizer():
    text = "a b c d e f g h"
    tokenizer = SimpleTokenizer(build_vocab(text))
    loader = create_dataloader(
        text,
        tokenizer=tokenizer,
        batch_size=2,
        context_length=3,
        stride=2,
        shuffle=False,
    )
    inputs, targets = next(iter(loader))
    assert inputs.tolist() == [[0, 1, 2], [2, 3, 4]] and targets.tolist() == [
        [1, 2, 3],
        [3, 4, 5],
    ]
