"""Tests for embeddings/ml/vocab.py: tokenizer, vocabulary building, round trips."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embeddings.ml.vocab import (
    BOS_ID,
    EOS_ID,
    PAD,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    Vocabulary,
    normalize,
    tokenize,
)

WORDS = ["a", "dog", "runs", "t-shirt", "dog's", "on", "the", "grass", "2", "men"]
PUNCT = [" ", "  ", ", ", " . ", "!", "?", ";", '"', " (", ") ", "\t", "\n", " - ", " ' "]


def test_tokenize_lowercases_and_drops_punctuation() -> None:
    assert tokenize("A dog, running!  Over the 'grass'.") == ["a", "dog", "running", "over", "the", "grass"]


def test_tokenize_keeps_inner_hyphens_and_apostrophes() -> None:
    assert tokenize("A boy's red T-shirt -- nice") == ["a", "boy's", "red", "t-shirt", "nice"]


def test_tokenize_drops_leading_and_trailing_joiners() -> None:
    assert tokenize("-dog- 'cat' dogs'") == ["dog", "cat", "dogs"]


def test_build_keeps_words_at_min_count_and_orders_by_frequency() -> None:
    captions = ["a dog runs", "a dog sits", "a cat", "zebra"]
    vocab = Vocabulary.build(captions, min_count=2)
    assert vocab.words == list(SPECIAL_TOKENS) + ["a", "dog"]
    vocab1 = Vocabulary.build(captions, min_count=1)
    # Ties at count 1 are broken alphabetically.
    assert vocab1.words[4:] == ["a", "dog", "cat", "runs", "sits", "zebra"]


def test_special_ids_are_fixed() -> None:
    vocab = Vocabulary.build(["x y"], min_count=1)
    assert [vocab.id_of(t) for t in SPECIAL_TOKENS] == [PAD_ID, BOS_ID, EOS_ID, UNK_ID]


def test_encode_maps_unknown_words_to_unk_and_adds_markers() -> None:
    vocab = Vocabulary(["a", "dog"])
    assert vocab.encode("A cat dog") == [BOS_ID, 4, UNK_ID, 5, EOS_ID]
    assert vocab.encode("a", add_bos=False, add_eos=False) == [4]


def test_decode_stops_at_eos_and_skips_pad_and_bos() -> None:
    vocab = Vocabulary(["a", "dog"])
    assert vocab.decode([BOS_ID, 4, PAD_ID, 5, EOS_ID, 4]) == "a dog"
    assert vocab.decode([4, UNK_ID, 5], keep_unk=False) == "a dog"


def test_decode_rejects_ids_outside_vocabulary() -> None:
    with pytest.raises(IndexError):
        Vocabulary(["a"]).decode([99])


def test_constructor_rejects_duplicates_and_unnormalized_words() -> None:
    with pytest.raises(ValueError):
        Vocabulary(["a", "a"])
    with pytest.raises(ValueError):
        Vocabulary(["Dog"])
    with pytest.raises(ValueError):
        Vocabulary([PAD])


def test_to_dict_round_trips_through_json() -> None:
    vocab = Vocabulary.build(["a dog", "a cat", "the dog"], min_count=1)
    restored = Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert restored.words == vocab.words
    assert restored.min_count == 1


def test_from_dict_rejects_unknown_keys_and_versions() -> None:
    data = Vocabulary(["a"]).to_dict()
    with pytest.raises(ValueError, match="unknown"):
        Vocabulary.from_dict({**data, "extra": 1})
    with pytest.raises(ValueError, match="format"):
        Vocabulary.from_dict({**data, "format_version": 99})
    with pytest.raises(ValueError, match="missing"):
        Vocabulary.from_dict({"words": ["a"]})


@st.composite
def messy_captions(draw: st.DrawFn) -> str:
    """Vocabulary words in random case, separated by random punctuation/whitespace."""
    words = draw(st.lists(st.sampled_from(WORDS), max_size=12))
    parts = [draw(st.sampled_from(PUNCT))]
    for word in words:
        cased = "".join(c.upper() if draw(st.booleans()) else c for c in word)
        parts += [cased, draw(st.sampled_from(PUNCT[:-2] + [" "]))]
    return "".join(parts)


@given(messy_captions())
@settings(max_examples=200, deadline=None)
def test_decode_encode_round_trips_normalized_text(text: str) -> None:
    vocab = Vocabulary(WORDS)
    assert vocab.decode(vocab.encode(text)) == normalize(text)
    assert UNK_ID not in vocab.encode(text)


@given(st.text(max_size=60))
@settings(max_examples=300, deadline=None)
def test_normalize_is_idempotent_on_arbitrary_text(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once
    assert tokenize(once) == tokenize(text)


@given(st.text(max_size=60))
@settings(max_examples=200, deadline=None)
def test_round_trip_replaces_only_oov_words_with_unk(text: str) -> None:
    vocab = Vocabulary.build([text], min_count=1)
    assert vocab.decode(vocab.encode(text)) == normalize(text)
    small = Vocabulary(["a"])
    expected = " ".join(w if w == "a" else "<unk>" for w in tokenize(text))
    assert small.decode(small.encode(text)) == expected
