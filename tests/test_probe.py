"""Tests of llm.probe: hidden states collected by hooks, labels computed from text,
control tasks, and linear probes trained on frozen features."""

import pytest
import torch

from llm.probe import (
    PROPERTIES,
    bucket_names,
    collect_features,
    control_labels,
    hidden_states,
    label_corpus,
    layer_names,
    most_frequent_classes,
    previous_token_labels,
    probe_accuracy,
    probe_layers,
    quote_labels,
    relabel,
    sentence_position_labels,
    sentence_start_labels,
    sentence_starts,
    token_char_spans,
    token_labels,
    train_probe,
)
from llm.tokenizer import gpt2_tokenizer


def word_spans(text: str) -> list[tuple[int, int]]:
    """One 'token' per run of non-space characters, with its leading spaces, as
    GPT-2 attaches a space to the word after it."""
    spans, start = [], 0
    for index in range(1, len(text) + 1):
        if index == len(text) or (text[index] == " " and text[index - 1] != " "):
            spans.append((start, index))
            start = index
    return spans


def pieces(text, spans):
    return [text[start:end] for start, end in spans]


# Hidden states


def test_hidden_states_gives_embedding_blocks_and_final_norm(make_tiny_model):
    model = make_tiny_model()
    ids = torch.randint(0, model.cfg.vocab_size, (2, 5))
    states = hidden_states(model, ids)
    assert len(states) == model.cfg.n_layers + 2 == len(layer_names(model))
    assert layer_names(model) == ["embedding", "block 1", "block 2", "final norm"]
    for state in states:
        assert state.shape == (2, 5, model.cfg.emb_dim)


def test_hidden_states_equal_the_models_own_computation(make_tiny_model):
    model = make_tiny_model()
    ids = torch.randint(0, model.cfg.vocab_size, (2, 7))
    states = hidden_states(model, ids)
    with torch.no_grad():
        embedding = model.tok_emb(ids) + model.pos_emb(torch.arange(7))
        after_first_block = model.blocks[0](embedding)
        logits = model(ids)
    torch.testing.assert_close(states[0], embedding)
    torch.testing.assert_close(states[1], after_first_block)
    # The last state is the final norm's output, which the output head reads
    torch.testing.assert_close(states[-1], model.final_norm(states[-2]))
    torch.testing.assert_close(model.out_head(states[-1]), logits)


def test_hidden_states_leaves_no_hooks_and_keeps_the_training_mode(make_tiny_model):
    model = make_tiny_model().train()
    hidden_states(model, torch.zeros(1, 3, dtype=torch.long))
    assert model.training
    assert all(not module._forward_hooks for module in model.modules())


def test_hidden_states_removes_its_hooks_when_the_forward_pass_fails(
    make_tiny_model,
):
    model = make_tiny_model()
    too_long = torch.zeros(1, model.cfg.context_length + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="context_length"):
        hidden_states(model, too_long)
    assert all(not module._forward_hooks for module in model.modules())


def test_collect_features_keeps_real_tokens_unchanged_by_padding(make_tiny_model):
    model = make_tiny_model()
    generator = torch.Generator().manual_seed(0)
    sequences = [
        torch.randint(0, model.cfg.vocab_size, (length,), generator=generator)
        for length in (3, 9, 5)
    ]
    features = collect_features(model, sequences, batch_size=2)
    assert features.shape == (model.cfg.n_layers + 2, 17, model.cfg.emb_dim)
    alone = torch.stack(hidden_states(model, sequences[2][None]))[:, 0]
    torch.testing.assert_close(features[:, 12:], alone, atol=1e-5, rtol=1e-5)


def test_collect_features_picks_the_layers_asked_for(make_tiny_model):
    model = make_tiny_model()
    sequences = [torch.tensor([1, 2, 3])]
    every = collect_features(model, sequences)
    chosen = collect_features(model, sequences, layers=[3, 0])
    torch.testing.assert_close(chosen, every[[3, 0]])


def test_collect_features_rejects_bad_input(make_tiny_model):
    model = make_tiny_model()
    with pytest.raises(ValueError, match="empty"):
        collect_features(model, [])
    with pytest.raises(ValueError, match="layer index 4 is out of range"):
        collect_features(model, [torch.tensor([1, 2])], layers=[4])
    with pytest.raises(ValueError, match="layer index -1 is out of range"):
        collect_features(model, [torch.tensor([1, 2])], layers=[-1])
    with pytest.raises(ValueError, match="1 to 16 token ids"):
        collect_features(model, [torch.zeros(17, dtype=torch.long)])
    with pytest.raises(ValueError, match="1 to 16 token ids"):
        collect_features(model, [torch.zeros(0, dtype=torch.long)])


# Labels computed from text


def test_quote_labels_mark_tokens_inside_straight_quotes():
    text = 'He said "come in now" and left.'
    spans = word_spans(text)
    assert pieces(text, spans) == [
        "He",
        " said",
        ' "come',
        " in",
        ' now"',
        " and",
        " left.",
    ]
    assert quote_labels(text, spans) == [0, 0, -1, 1, -1, 0, 0]


def test_quote_labels_follow_curly_quotes_and_unclosed_paragraphs():
    text = "\u201cYes, sir. You go \u201cfirst and I follow"
    spans = word_spans(text)
    labels = quote_labels(text, spans)
    assert pieces(text, spans)[4] == " \u201cfirst"
    # An opening curly quote never closes a quotation, as a straight one would
    assert labels == [-1, 1, 1, 1, -1, 1, 1, 1]


def test_sentence_starts_follow_end_marks_and_skip_titles():
    text = 'It rained. "Why?" asked Mr. Brown. He left! and I stayed.'
    starts = sentence_starts(text)
    assert [text[index : index + 3] for index in starts] == ["It ", "Why", "He "]


def test_sentence_start_labels_only_label_capitalised_tokens():
    text = "The dog ran. Then Dorothy and I sat."
    spans = word_spans(text)
    assert sentence_start_labels(text, spans) == [1, -1, -1, 1, 0, -1, 0, -1]


def test_sentence_position_labels_count_tokens_since_the_sentence_start():
    text = '"So I did. One two three four five six seven eight nine ten eleven'
    spans = word_spans(text)
    # '"So' holds the first letter, so it starts the first sentence; "eleven" is
    # 10 tokens after "One"
    expected = [0, 1, 1, 0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3]
    assert sentence_position_labels(text, spans) == expected
    assert bucket_names() == ["0", "1-3", "4-9", "10-19", "20+"]
    assert bucket_names((2, 5)) == ["0-1", "2-4", "5+"]


def test_sentence_position_leaves_tokens_before_the_first_sentence_unlabelled():
    text = '" ... Go on.'
    assert sentence_position_labels(text, word_spans(text)) == [-1, -1, 0, 1]


def test_previous_token_labels_shift_the_ids():
    assert previous_token_labels([5, 7, 9]) == [-1, 5, 7]


def test_token_char_spans_give_split_characters_to_both_tokens(mirror):
    tokenizer = gpt2_tokenizer()
    text = "He said \u201cHi.\u201d"
    ids = tokenizer.encode_ordinary(text)
    spans = token_char_spans(text, ids, tokenizer)
    quote_tokens = [span for span in spans if "\u201c" in text[span[0] : span[1]]]
    # GPT-2 splits the curly quote's three bytes between two tokens
    assert len(quote_tokens) == 2
    assert spans[0] == (0, 2)
    assert quote_labels(text, spans).count(1) == 2
    with pytest.raises(ValueError, match="not the tokens of text"):
        token_char_spans("other text", ids, tokenizer)


def test_label_corpus_labels_every_token_of_every_text(mirror):
    tokenizer = gpt2_tokenizer()
    texts = ['"Hi," she said.', "Then he left."]
    sequences, labels = label_corpus(texts, tokenizer)
    total = sum(len(sequence) for sequence in sequences)
    assert set(labels) == set(PROPERTIES)
    assert all(len(values) == total for values in labels.values())
    first = tokenizer.encode_ordinary(texts[0])
    assert labels["previous token"][: len(first)].tolist() == [-1, *first[:-1]]


def test_bad_corpus_or_property_is_refused(mirror):
    tokenizer = gpt2_tokenizer()
    with pytest.raises(ValueError, match="empty"):
        label_corpus([], tokenizer)
    with pytest.raises(ValueError, match="empty text"):
        label_corpus(["fine", ""], tokenizer)
    with pytest.raises(ValueError, match="unknown property 'verbs'.*quotes"):
        token_labels("verbs", "text", tokenizer.encode_ordinary("text"), tokenizer)


def test_most_frequent_classes_and_relabel():
    labels = torch.tensor([7, 3, 7, -1, 5, 3, 7, 9])
    classes = most_frequent_classes(labels, 2)
    assert classes.tolist() == [7, 3]
    assert relabel(labels, classes).tolist() == [0, 1, 0, -1, -1, 1, 0, -1]


# Control tasks


def test_control_labels_are_one_label_per_token_type():
    generator = torch.Generator().manual_seed(1)
    token_ids = torch.randint(0, 20, (500,), generator=generator)
    labels = torch.randint(0, 3, (500,), generator=generator)
    labels[::7] = -1
    control = control_labels(token_ids, labels, seed=4)
    assert torch.equal(control == -1, labels == -1)
    for token in token_ids.unique():
        assert len(control[(token_ids == token) & (labels >= 0)].unique()) == 1


def test_control_labels_are_deterministic_for_a_seed_and_follow_the_distribution():
    generator = torch.Generator().manual_seed(2)
    token_ids = torch.randint(0, 2000, (4000,), generator=generator)
    # Label 1 three times as frequent as label 0, no label 2
    labels = (torch.rand(4000, generator=generator) < 0.75).long()
    first = control_labels(token_ids, labels, seed=3)
    assert torch.equal(first, control_labels(token_ids, labels, seed=3))
    assert not torch.equal(first, control_labels(token_ids, labels, seed=4))
    assert set(first.unique().tolist()) == {0, 1}
    assert 0.65 < (first == 1).float().mean().item() < 0.85


def test_control_labels_reject_bad_input():
    with pytest.raises(ValueError, match="same length"):
        control_labels(torch.tensor([1, 2]), torch.tensor([0]))
    with pytest.raises(ValueError, match="no labelled tokens"):
        control_labels(torch.tensor([1, 2]), torch.tensor([-1, -1]))


# Probes


def identity_data(model, n_sequences, seed):
    """Sequences of the first 8 token ids, labelled by their token id."""
    generator = torch.Generator().manual_seed(seed)
    sequences = [
        torch.randint(0, 8, (model.cfg.context_length,), generator=generator)
        for _ in range(n_sequences)
    ]
    return collect_features(model, sequences), torch.cat(sequences)


def test_probe_reads_token_identity_from_the_embedding(make_tiny_model):
    model = make_tiny_model()
    train_features, train_ids = identity_data(model, 40, seed=0)
    test_features, test_ids = identity_data(model, 20, seed=1)
    probe = train_probe(train_features[0], train_ids, num_classes=8)
    assert probe_accuracy(probe, test_features[0], test_ids) > 0.95


def test_probe_is_at_chance_on_random_labels(make_tiny_model):
    model = make_tiny_model()
    train_features, _ = identity_data(model, 40, seed=0)
    test_features, _ = identity_data(model, 100, seed=1)
    generator = torch.Generator().manual_seed(5)
    train_labels = torch.randint(0, 4, (train_features.shape[1],), generator=generator)
    test_labels = torch.randint(0, 4, (test_features.shape[1],), generator=generator)
    scores = probe_layers(train_features, train_labels, test_features, test_labels, 4)
    assert len(scores) == model.cfg.n_layers + 2
    assert all(abs(score - 0.25) < 0.05 for score in scores)


def test_probe_leaves_out_unlabelled_tokens():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    labels = torch.tensor([0, 1, -1])
    probe = train_probe(features, labels, num_classes=2)
    assert probe_accuracy(probe, features, labels) == 1.0


def test_train_probe_rejects_bad_input():
    features = torch.randn(4, 3)
    with pytest.raises(ValueError, match="no labelled tokens"):
        train_probe(features, torch.full((4,), -1), num_classes=2)
    with pytest.raises(ValueError, match="one row per label"):
        train_probe(features, torch.zeros(3, dtype=torch.long), num_classes=2)
    with pytest.raises(ValueError, match="label 2 is not below num_classes=2"):
        train_probe(features, torch.tensor([0, 1, 2, 0]), num_classes=2)


def test_an_mlp_probe_reads_what_a_linear_probe_cannot():
    generator = torch.Generator().manual_seed(6)
    # (layers=1, tokens, dim): the label is the XOR of the signs of two features
    features = torch.randn(1, 2000, 2, generator=generator)
    labels = ((features[0, :, 0] > 0) ^ (features[0, :, 1] > 0)).long()
    train, test = slice(0, 1500), slice(1500, None)

    def scores(**options):
        return probe_layers(
            features[:, train],
            labels[train],
            features[:, test],
            labels[test],
            2,
            max_steps=300,
            **options,
        )

    assert scores()[0] < 0.65
    assert scores(hidden_size=32)[0] > 0.9
