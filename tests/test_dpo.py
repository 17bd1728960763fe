"""llm.dpo: the preference data, padded pair batches, response log-probabilities,
the DPO loss against hand-computed values, the frozen reference, the metrics."""

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from llm.dpo import (
    DPO_TRAINING,
    PreferenceDataError,
    PreferenceDataset,
    check_preference,
    dpo_batch_loss,
    dpo_loss,
    finetune_preferences,
    load_preferences,
    preference_collate,
    preference_metrics,
    score_reference,
    sequence_logprobs,
)
from llm.instruct import IGNORE_INDEX, InstructionDataError, format_prompt

END = 0
PAIR = {
    "instruction": "Add.",
    "input": "2 and 3",
    "chosen": "It is 5.",
    "rejected": "5, obviously.",
}
BARE = {"instruction": "Hi.", "input": "", "chosen": "Hello!", "rejected": "What?"}


class CharTokenizer:
    """One token per character (ids 1-63); id 0 is end-of-text."""

    eot_token = END

    def encode_ordinary(self, text):
        return [1 + ord(c) % 63 for c in text]


def short_pairs(count: int) -> list[dict]:
    """`count` pairs whose prompt is one character, so they fit a context of 16."""
    return [
        {"instruction": "x", "chosen": "ab" * (1 + i % 3), "rejected": "cd"}
        for i in range(count)
    ]


class OneCharPrompt(CharTokenizer):
    """Encodes every prompt as one token, so that tiny models can read pairs."""

    def encode_ordinary(self, text):
        if text.startswith("Below is"):
            return [1]
        return super().encode_ordinary(text)


# ---- the data ----


def test_the_preference_data_has_1100_pairs_of_distinct_responses(mirror):
    entries = load_preferences()
    assert len(entries) == 1100
    fields = {"instruction", "input", "chosen", "rejected"}
    assert all(set(entry) == fields for entry in entries)
    assert sum(entry["chosen"] != entry["rejected"] for entry in entries) > 1000


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"instruction": "Do.", "rejected": "x"}, "entry 2 has no 'chosen' field"),
        ({"instruction": "Do.", "chosen": "x"}, "entry 2 has no 'rejected' field"),
        (
            {"instruction": "Do.", "chosen": 3, "rejected": "x"},
            "entry 2: the 'chosen' field must be a string",
        ),
        (
            {"instruction": "Do.", "chosen": "x", "rejected": None},
            "entry 2: the 'rejected' field must be a string",
        ),
        (
            {"instruction": "Do.", "chosen": "x", "rejected": " "},
            "'rejected' field is empty",
        ),
        ({"chosen": "x", "rejected": "y"}, "entry 2 has no 'instruction' field"),
        ("Do it.", "preference entry 2 must be a dict"),
    ],
)
def test_a_bad_pair_is_a_clear_error_that_names_it(monkeypatch, entry, message):
    monkeypatch.setattr(
        "llm.dpo.read_text", lambda name: json.dumps([PAIR, BARE, entry])
    )
    with pytest.raises(PreferenceDataError, match=message):
        load_preferences()
    with pytest.raises(
        InstructionDataError, match=message.replace("entry 2", "entry 7")
    ):
        check_preference(entry, 7)
    with pytest.raises(PreferenceDataError, match=message):
        PreferenceDataset([PAIR, BARE, entry], CharTokenizer())


def test_a_file_that_is_not_a_json_list_is_refused(monkeypatch):
    monkeypatch.setattr("llm.dpo.read_text", lambda name: '{"a": 1}')
    with pytest.raises(PreferenceDataError, match="JSON list"):
        load_preferences()


def test_a_pair_holds_prompt_plus_each_response_plus_end_of_text():
    tokenizer = CharTokenizer()
    data = PreferenceDataset([PAIR], tokenizer)
    chosen_ids, rejected_ids, prompt_length, reference = data[0]
    prompt = tokenizer.encode_ordinary(format_prompt(PAIR))
    assert chosen_ids.tolist() == prompt + tokenizer.encode_ordinary("It is 5.") + [0]
    assert rejected_ids.tolist()[len(prompt) :] == tokenizer.encode_ordinary(
        "5, obviously."
    ) + [0]
    assert int(prompt_length) == len(prompt)
    assert reference.isnan().all()


def test_pairs_longer_than_the_context_are_dropped_and_counted():
    tokenizer = CharTokenizer()
    prompt = len(tokenizer.encode_ordinary(format_prompt(BARE)))
    # "Hello!" has 6 tokens, "What?" 5: the longer response decides
    data = PreferenceDataset([BARE, PAIR], tokenizer, max_length=prompt + 6)
    assert (len(data), data.dropped) == (1, 1)
    data = PreferenceDataset([BARE], tokenizer, max_length=prompt + 5)
    assert (len(data), data.dropped) == (0, 1)
    with pytest.raises(ValueError, match="max_length"):
        PreferenceDataset([BARE], tokenizer, max_length=0)


# ---- batches and log-probabilities ----


def test_the_collated_batch_puts_chosen_rows_first_and_masks_prompt_and_padding():
    items = [
        (torch.tensor([5, 6, 7, 0]), torch.tensor([5, 6, 8, 9, 0]), torch.tensor(2),
         torch.tensor([-1.0, -2.0])),
        (torch.tensor([4, 7, 0]), torch.tensor([4, 9, 0]), torch.tensor(1),
         torch.tensor([-3.0, -4.0])),
    ]  # fmt: skip
    inputs, targets, reference = preference_collate(items, pad_id=END)
    assert inputs.tolist() == [
        [5, 6, 7, 0],
        [4, 7, 0, 0],
        [5, 6, 8, 9],
        [4, 9, 0, 0],
    ]
    ignored = IGNORE_INDEX
    assert targets.tolist() == [
        [ignored, 7, 0, ignored],
        [7, 0, ignored, ignored],
        [ignored, 8, 9, 0],
        [9, 0, ignored, ignored],
    ]
    assert reference.tolist() == [-1.0, -3.0, -2.0, -4.0]


def test_an_empty_batch_is_a_clear_error():
    with pytest.raises(ValueError, match="empty batch"):
        preference_collate([], pad_id=END)
    with pytest.raises(ValueError, match="empty batch"):
        empty = torch.zeros(0)
        dpo_loss(empty, empty, empty, empty, beta=0.1)


def test_sequence_logprobs_sums_the_log_probabilities_of_the_response_tokens(
    make_tiny_model,
):
    model = make_tiny_model()
    inputs = torch.tensor([[3, 4, 5, 6], [7, 8, 9, 0]])
    targets = torch.tensor([[-100, 5, 6, 1], [-100, -100, 2, -100]])
    with torch.no_grad():
        logprobs = F.log_softmax(model(inputs), dim=-1)
        got = sequence_logprobs(model, inputs, targets)
    expected = [
        logprobs[0, 1, 5] + logprobs[0, 2, 6] + logprobs[0, 3, 1],
        logprobs[1, 2, 2],
    ]
    assert torch.allclose(got, torch.stack(expected), atol=1e-5)
    with pytest.raises(ValueError, match="no target"):
        sequence_logprobs(model, inputs, torch.full_like(targets, -100))


# ---- the loss ----


def test_the_dpo_loss_matches_a_hand_computed_value():
    # Rewards: 0.5 * (-1 - -2) = 0.5 and 0.5 * (-3 - -2) = -0.5, margin 1;
    # second pair: 0.5 * 0 = 0 and 0.5 * (-1 - -3) = 1, margin -1
    loss, chosen, rejected = dpo_loss(
        torch.tensor([-1.0, -2.0]),
        torch.tensor([-3.0, -1.0]),
        torch.tensor([-2.0, -2.0]),
        torch.tensor([-2.0, -3.0]),
        beta=0.5,
    )
    assert chosen.tolist() == [0.5, 0.0]
    assert rejected.tolist() == [-0.5, 1.0]
    # -log sigmoid(1) = log(1 + e^-1), -log sigmoid(-1) = log(1 + e)
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.e)) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.8133, abs=1e-4)


def test_the_loss_is_log_2_when_the_policy_is_the_reference():
    logprobs = torch.tensor([-4.0, -7.0])
    loss, chosen, rejected = dpo_loss(
        logprobs, logprobs - 1, logprobs, logprobs - 1, 0.1
    )
    assert loss.item() == pytest.approx(math.log(2))
    assert chosen.tolist() == rejected.tolist() == [0.0, 0.0]


def test_beta_must_be_positive_and_shapes_must_agree():
    one = torch.zeros(2)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(one, one, one, one, beta=0.0)
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(one, one, one, torch.zeros(3), beta=0.1)


def test_the_loss_needs_the_reference_log_probabilities(make_tiny_model):
    data = PreferenceDataset(short_pairs(2), OneCharPrompt(), 15)
    batch = preference_collate([data[0], data[1]], END)
    with pytest.raises(ValueError, match="score_reference"):
        dpo_batch_loss(make_tiny_model(), *batch, beta=0.1)


# ---- training against a frozen reference ----


def test_training_moves_the_policy_and_never_the_reference(make_tiny_model):
    reference = make_tiny_model(seed=1)
    frozen = copy.deepcopy(reference.state_dict())
    tokenizer = OneCharPrompt()
    train_data = PreferenceDataset(short_pairs(16), tokenizer, 15)
    val_data = PreferenceDataset(short_pairs(4), tokenizer, 15)
    for data in (train_data, val_data):
        score_reference(reference, data, batch_size=3)
    before = preference_metrics(reference, train_data, beta=0.5)
    assert before["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert before["margin"] == pytest.approx(0.0, abs=1e-5)
    policy = copy.deepcopy(reference)
    settings = DPO_TRAINING.replace(
        max_steps=20, batch_size=4, eval_every=10, lr=1e-2, precision="fp32"
    )
    finetune_preferences(policy, train_data, val_data, settings, beta=0.5, on_eval=None)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, frozen[name]), name
    after = preference_metrics(policy, train_data, beta=0.5)
    assert after["loss"] < before["loss"]
    assert after["margin"] > 0
    assert after["accuracy"] > 0.5
