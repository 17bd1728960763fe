"""llm.classify: the spam data, padded batches, the classifier head, metrics,
and saving and loading a classifier."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llm.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from llm.classify import (
    ClassificationDataset,
    SequenceClassifier,
    accuracy,
    balance_classes,
    classification_loss,
    classify,
    confusion_matrix,
    load_classifier,
    load_sms_spam,
    pad_batch,
    precision_recall_f1,
    predict,
    save_classifier,
    set_trainable,
    split_examples,
)

PAD = 7


class CharTokenizer:
    """One token per character (ids 1-63), enough to test the data code."""

    def encode_ordinary(self, text):
        return [1 + ord(c) % 63 for c in text]


@pytest.fixture
def classifier(make_tiny_model):
    torch.manual_seed(1)
    return SequenceClassifier(make_tiny_model(seed=0)).eval()


def test_the_sms_collection_has_5574_messages_747_of_them_spam(mirror):
    messages = load_sms_spam()
    assert len(messages) == 5574
    assert sum(label for _, label in messages) == 747
    assert messages[0][0].startswith("Go until jurong point")


def test_balancing_keeps_every_example_of_the_rarest_label_and_as_many_others():
    examples = [(f"ham {i}", 0) for i in range(50)] + [
        (f"spam {i}", 1) for i in range(8)
    ]
    balanced = balance_classes(examples, seed=3)
    assert len(balanced) == 16
    assert sorted(t for t, y in balanced if y == 1) == sorted(
        t for t, y in examples if y == 1
    )
    assert balanced == balance_classes(examples, seed=3)


def test_the_split_is_seeded_disjoint_and_has_the_requested_sizes():
    examples = [(str(i), i % 2) for i in range(100)]
    train, val, test = split_examples(examples, (0.7, 0.1, 0.2), seed=5)
    assert (len(train), len(val), len(test)) == (70, 10, 20)
    assert sorted(train + val + test) == sorted(examples)
    assert (train, val, test) == split_examples(examples, (0.7, 0.1, 0.2), seed=5)


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.7, 0.2, 0.2), (1.2, -0.1, -0.1)])
def test_fractions_that_do_not_add_up_to_one_are_refused(fractions):
    with pytest.raises(ValueError, match="fractions"):
        split_examples([("a", 0)] * 10, fractions, seed=0)


def test_a_long_text_keeps_its_last_tokens_and_is_counted():
    data = ClassificationDataset(
        [("abcdefghij", 1), ("abc", 0)], CharTokenizer(), max_length=4
    )
    assert data[0][0].tolist() == CharTokenizer().encode_ordinary("ghij")
    assert data.truncated == 1
    assert data.labels.tolist() == [1, 0]


def test_an_empty_text_is_a_clear_error():
    with pytest.raises(ValueError, match="example 1 has an empty text"):
        ClassificationDataset([("hi", 0), ("", 1)], CharTokenizer(), max_length=8)


def test_pad_batch_pads_on_the_right_to_the_longest_item_of_the_batch():
    items = [
        (torch.tensor([3, 4, 5]), torch.tensor(1)),
        (torch.tensor([9]), torch.tensor(0)),
    ]
    inputs, lengths, labels = pad_batch(items, pad_id=PAD)
    assert inputs.tolist() == [[3, 4, 5], [9, PAD, PAD]]
    assert lengths.tolist() == [3, 1] and labels.tolist() == [1, 0]


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 10), min_size=1, max_size=4),
    extra=st.integers(1, 5),
    pooling=st.sampled_from(["last", "mean"]),
)
def test_extra_padding_leaves_the_scores_unchanged(lengths, extra, pooling):
    torch.manual_seed(0)
    from llm.model import GPTModel

    from conftest import TINY_CONFIG

    classifier = SequenceClassifier(GPTModel(TINY_CONFIG), pooling=pooling).eval()
    generator = torch.Generator().manual_seed(sum(lengths))
    items = [
        (torch.randint(0, 64, (n,), generator=generator), torch.tensor(0))
        for n in lengths
    ]
    inputs, batch_lengths, _ = pad_batch(items, pad_id=PAD)
    padded = torch.cat([inputs, torch.full((len(items), extra), PAD)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(
            classifier(inputs, batch_lengths),
            classifier(padded, batch_lengths),
            atol=1e-5,
            rtol=0,
        )


def test_each_item_scores_as_it_would_alone(classifier):
    items = [
        (torch.tensor([1, 2, 3, 4, 5]), torch.tensor(0)),
        (torch.tensor([6, 7]), torch.tensor(1)),
    ]
    inputs, lengths, _ = pad_batch(items, pad_id=PAD)
    with torch.no_grad():
        together = classifier(inputs, lengths)
        alone = classifier(torch.tensor([[6, 7]]), torch.tensor([2]))
    torch.testing.assert_close(together[1:], alone, atol=1e-5, rtol=0)


def test_the_classifier_has_a_two_way_head_and_checks_its_arguments(
    make_tiny_model, tiny_config
):
    classifier = SequenceClassifier(make_tiny_model())
    assert classifier.model.out_head.weight.shape == (2, tiny_config.emb_dim)
    with pytest.raises(ValueError, match="pooling"):
        SequenceClassifier(make_tiny_model(), pooling="first")
    with pytest.raises(ValueError, match="num_classes"):
        SequenceClassifier(make_tiny_model(), num_classes=1)


def test_set_trainable_counts_the_parameters_of_each_part(classifier, tiny_config):
    emb = tiny_config.emb_dim
    head = emb * 2 + 2
    block = sum(p.numel() for p in classifier.model.blocks[-1].parameters())
    assert set_trainable(classifier, "head") == head
    assert set_trainable(classifier, "last_block") == head + block + 2 * emb
    assert set_trainable(classifier, "all") == sum(
        p.numel() for p in classifier.parameters()
    )
    with pytest.raises(ValueError, match="part"):
        set_trainable(classifier, "embeddings")


def test_the_loss_is_cross_entropy_of_the_label(classifier):
    inputs, lengths, labels = pad_batch(
        [(torch.tensor([1, 2]), torch.tensor(1))], pad_id=PAD
    )
    scores = classifier(inputs, lengths)
    expected = -torch.log_softmax(scores, dim=-1)[0, 1]
    torch.testing.assert_close(
        classification_loss(classifier, inputs, lengths, labels), expected
    )


def test_predict_labels_every_example_in_order(classifier):
    data = ClassificationDataset(
        [("ab", 0), ("cde", 1), ("f", 0)], CharTokenizer(), max_length=16
    )
    predictions = predict(classifier, data, pad_id=PAD, batch_size=2)
    with torch.no_grad():
        one_by_one = [
            classifier(data[i][0][None], torch.tensor([len(data[i][0])]))
            .argmax()
            .item()
            for i in range(3)
        ]
    assert predictions.tolist() == one_by_one


def test_confusion_matrix_and_precision_recall_f1_on_known_counts():
    predictions = torch.tensor([1, 1, 0, 0, 1, 0])
    labels = torch.tensor([1, 0, 0, 1, 1, 0])
    counts = confusion_matrix(predictions, labels)
    assert counts.tolist() == [[2, 1], [1, 2]]
    assert precision_recall_f1(counts) == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3}
    )
    assert accuracy(predictions, labels) == pytest.approx(4 / 6)


def test_no_positive_predictions_give_zero_precision_not_a_division_error():
    counts = confusion_matrix(torch.tensor([0, 0]), torch.tensor([1, 0]))
    assert precision_recall_f1(counts) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_classify_keeps_the_last_tokens_of_a_long_text(classifier):
    label, probability = classify(classifier, "ab" * 200 + "xyz", CharTokenizer())
    ids = CharTokenizer().encode_ordinary("ab" * 200 + "xyz")[
        -classifier.cfg.context_length :
    ]
    with torch.no_grad():
        scores = classifier(torch.tensor([ids]), torch.tensor([len(ids)]))[0]
    expected = torch.softmax(scores, dim=-1).max().item()
    assert label == ("ham", "spam")[scores.argmax().item()]
    assert probability == pytest.approx(expected)


def test_classifying_an_empty_text_is_a_clear_error(classifier):
    with pytest.raises(ValueError, match="empty"):
        classify(classifier, "", CharTokenizer())


def test_a_saved_classifier_reloads_with_identical_scores(classifier, tmp_path):
    path = save_classifier(classifier, tmp_path / "classifier.safetensors")
    reloaded = load_classifier(path)
    inputs = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(inputs, torch.tensor([3])), classifier(inputs, torch.tensor([3]))
        )
    assert reloaded.pooling == classifier.pooling


def test_a_language_model_checkpoint_is_not_loaded_as_a_classifier(
    make_tiny_model, tmp_path
):
    path = save_checkpoint(make_tiny_model(), tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="not of a classifier"):
        load_classifier(path)


def test_a_classifier_checkpoint_does_not_load_into_a_model_of_another_shape(
    classifier, make_tiny_model, tmp_path
):
    path = save_classifier(classifier, tmp_path / "classifier.safetensors")
    with pytest.raises(CheckpointError):
        load_checkpoint(path, make_tiny_model())
