"""Tests for embeddings/ml/zero_shot_labels.py: class words, summed confidence, word forms."""
from __future__ import annotations

import numpy as np
import pytest

from embeddings.ml.conse import load_class_names
from embeddings.ml.vocab import tokenize
from embeddings.ml.zero_shot_labels import class_words, confident_labels, head_word, ruled_out, word_forms

NAMES = load_class_names()
WORDS = class_words(NAMES)


def test_every_class_has_one_plain_lower_case_word() -> None:
    assert len(WORDS) == 1000
    assert all(tokenize(w) == [w] for w in WORDS)


@pytest.mark.parametrize("name,word", [
    ("tabby", "cat"), ("Egyptian cat", "cat"), ("golden retriever", "dog"), ("Chihuahua", "dog"),
    ("Rhodesian ridgeback", "dog"), ("great white shark", "shark"), ("golf ball", "ball"),
    ("Madagascar cat", "lemur"), ("hotdog", "hotdog"), ("airliner", "plane"), ("teapot", "teapot"),
])
def test_class_words(name: str, word: str) -> None:
    assert WORDS[NAMES.index(name)] == word


def test_head_word_is_the_singular_last_word() -> None:
    assert head_word("wire-haired fox terrier") == "dog" and head_word("running shoes") == "shoe"


def test_a_word_is_as_confident_as_all_its_classes_together() -> None:
    logits = np.full((2, 1000), -10.0)
    dogs = [NAMES.index(n) for n in ("beagle", "basset", "bloodhound")]
    logits[0, dogs] = 5.0  # three breeds a third each: no class is confident, "dog" is
    logits[1, NAMES.index("teapot")] = 5.0
    logits[1, NAMES.index("coffeepot")] = 5.0  # half each: two different words
    got = confident_labels(logits, WORDS, threshold=0.45, max_labels=2)
    assert [lab.word for lab in got[0]] == ["dog"] and got[0][0].score == pytest.approx(1.0, abs=1e-3)
    assert sorted(lab.word for lab in got[1]) == ["coffeepot", "teapot"]
    assert confident_labels(logits, WORDS, threshold=0.6, max_labels=2)[1] == []
    assert len(confident_labels(logits, WORDS, threshold=0.4, max_labels=1)[1]) == 1


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="class words"):
        confident_labels(np.zeros((1, 10)), WORDS, threshold=0.5)
    with pytest.raises(ValueError, match="threshold"):
        confident_labels(np.zeros((1, 1000)), WORDS, threshold=0.0)


def test_word_forms_cover_plural_and_synonyms() -> None:
    assert {"bike", "bikes", "bicycle", "bicycles"} <= word_forms("bike")
    assert {"cat", "cats", "kitten"} <= word_forms("cat")
    assert word_forms("teapot") == {"teapot", "teapots"}


def test_an_animal_label_rules_out_the_improbable_animals_and_their_groups() -> None:
    logits = np.full((3, 1000), -10.0)
    logits[0, NAMES.index("tabby")] = 8.0  # a cat: dogs, birds, fish ruled out
    logits[1, NAMES.index("tabby")] = 8.0
    logits[1, NAMES.index("beagle")] = 6.0  # a cat that might be with a dog: "dog" stays
    logits[2, NAMES.index("teapot")] = 8.0  # not an animal: nothing ruled out
    got = ruled_out(logits, WORDS, [["cat"], ["cat"], ["teapot"]], below=0.01)
    assert {"dog", "bird", "fish"} <= set(got[0]) and "cat" not in got[0]
    assert "dog" not in got[1] and "bird" in got[1]
    assert got[2] == []
    eagle = ruled_out(logits[:1] * 0 + np.where(np.arange(1000) == NAMES.index("bald eagle"), 8.0, -10.0), WORDS,
                      [["eagle"]], below=0.01)[0]
    assert "bird" not in eagle and "cat" in eagle  # an eagle is a bird


def test_unlabelled_rules_out_improbable_animals_in_every_picture() -> None:
    logits = np.full((3, 1000), -10.0)
    logits[0, NAMES.index("teapot")] = 8.0  # a teapot: no animal may be said
    logits[1, NAMES.index("teapot")] = 8.0
    logits[1, NAMES.index("beagle")] = 6.0  # a teapot with a likely dog: "dog" stays sayable
    logits[2, NAMES.index("tabby")] = 8.0  # an animal label: as without `unlabelled`
    labels = [["teapot"], [], ["cat"]]
    got = ruled_out(logits, WORDS, labels, below=0.01, unlabelled=True)
    assert {"dog", "cat", "bird", "fish"} <= set(got[0])
    assert "dog" not in got[1] and "cat" in got[1]
    assert got[2] == ruled_out(logits, WORDS, labels, below=0.01)[2] and "cat" not in got[2]
    assert ruled_out(logits, WORDS, labels, below=0.01)[:2] == [[], []]  # off: labelled animals only


def test_singular_nouns_ending_in_s_are_kept() -> None:
    assert WORDS[NAMES.index("abacus")] == "abacus" and WORDS[NAMES.index("hippopotamus")] == "hippopotamus"
    assert "abacu" not in word_forms("abacus")
