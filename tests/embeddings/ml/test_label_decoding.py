"""Tests for embeddings/ml/label_decoding.py and label-guided CaptionGenerator.caption."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from embeddings.ml.caption_generator import CaptionGenerator, DecodingConfig, load_captioner, save_captioner
from embeddings.ml.captioner import CaptionerConfig, build_decoder
from embeddings.ml.label_decoding import LabelDecoding
from embeddings.ml.vocab import Vocabulary

VOCAB = Vocabulary(["a", "cat", "cats", "dog", "pot", "on", "the", "grass"])
CLASSES = ["tabby", "teapot", "coffee mug", "pot", "hound"]  # not 1000: head words only


def fake_vectors(texts: list[str]) -> np.ndarray:
    """Prompted words as vectors where "teapot" sits next to "pot" and "mug" next to "cat"."""
    axes = {"pot": 0, "teapot": 0, "cat": 1, "mug": 1, "tabby": 1, "dog": 2}
    out = np.zeros((len(texts), 3), np.float32)
    for i, text in enumerate(texts):
        word = text.removeprefix("a photo of a ").rstrip(".")
        out[i, axes[word]] = 1.0
        out[i, (axes[word] + 1) % 3] = 0.1
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_in_vocabulary_words_become_their_forms_and_oov_words_extra_ids() -> None:
    dec = LabelDecoding(VOCAB, word_vectors=fake_vectors, class_names=CLASSES)
    constraints, ext, used = dec.constraints([["cat"], ["teapot", "cat"], []])
    cat, cats, pot = VOCAB.id_of("cat"), VOCAB.id_of("cats"), VOCAB.id_of("pot")
    assert constraints[0] == [[cat, cats]]
    assert ext.words == ("teapot",) and ext.stand_ins == (pot,)
    assert constraints[1] == [[len(VOCAB)], [cat, cats]] and used == [["cat"], ["teapot", "cat"], []]
    assert dec.render([VOCAB.id_of("a"), len(VOCAB), 2, 5], ext) == "a teapot"


def test_without_word_vectors_an_oov_word_is_skipped() -> None:
    dec = LabelDecoding(VOCAB, class_names=CLASSES)
    constraints, ext, used = dec.constraints([["teapot", "dog"]])
    assert constraints == [[[VOCAB.id_of("dog")]]] and ext.words == () and used == [["dog"]]


def tiny_generator(**decoding) -> CaptionGenerator:
    torch.manual_seed(0)
    config = CaptionerConfig(decoder="attention", vocab_size=len(VOCAB), feature_dim=8, num_cells=4, embed_dim=6,
                             hidden_dim=10, context_dim=7, attention_dim=5, dropout=0.0, max_len=6)
    gen = CaptionGenerator(build_decoder(config), VOCAB, decoding=DecodingConfig(beam_size=3, **decoding))
    gen.word_vectors = fake_vectors
    gen._labels = LabelDecoding(VOCAB, word_vectors=fake_vectors, class_names=CLASSES)
    return gen


def test_guided_captions_name_their_labels_and_say_which() -> None:
    gen = tiny_generator()
    spatial = torch.rand(2, 4, 8, generator=torch.Generator().manual_seed(3))
    got = gen.caption(spatial.mean(1), spatial, n=2, labels=[["teapot"], []])
    plain = gen.caption(spatial.mean(1), spatial, n=2)
    assert all("teapot" in c.text.split() and c.labels == ("teapot",) for c in got[0])
    assert [c.text for c in got[1]] == [c.text for c in plain[1]] and all(c.labels == () for c in got[1])
    greedy = gen.caption(spatial.mean(1), spatial, beam_size=1, labels=[["teapot"], ["teapot"]])
    assert all(c[0].labels == () for c in greedy)  # greedy is never constrained


def test_decoding_settings_travel_with_the_checkpoint(tmp_path) -> None:
    gen = tiny_generator(constrain_labels=True, label_threshold=0.4, max_labels=2, rule_out_below=0.02)
    save_captioner(tmp_path / "cap", gen.decoder, VOCAB, decoding=gen.decoding)
    assert load_captioner(tmp_path / "cap").decoding == gen.decoding
    old = {k: v for k, v in gen.decoding.to_dict().items() if k not in {"constrain_labels", "label_threshold",
                                                                          "max_labels", "rule_out_below"}}
    assert DecodingConfig.from_dict(old) == dataclasses.replace(gen.decoding, constrain_labels=False,
                                                                label_threshold=0.5, max_labels=1, rule_out_below=0.0)


def test_avoided_words_are_never_said_beside_a_label() -> None:
    gen = tiny_generator()
    spatial = torch.rand(3, 4, 8, generator=torch.Generator().manual_seed(5))
    plain = gen.caption(spatial.mean(1), spatial, n=3, labels=[["cat"]] * 3)
    said = {w for per in plain for c in per for w in c.text.split()} - {"cat", "cats"}
    avoid = sorted(said)[:2]
    got = gen.caption(spatial.mean(1), spatial, n=3, labels=[["cat"]] * 3, avoid=[avoid] * 3)
    for per in got:
        for c in per:
            assert c.labels == ("cat",) and not set(c.text.split()) & set(avoid), c


def test_avoided_words_are_never_said_without_a_label_either() -> None:
    """`rule_out_unlabelled`: a picture with no confident label still gets a beam search that
    never says its avoided words; with nothing to avoid, it is the plain beam search."""
    gen = tiny_generator()
    spatial = torch.rand(3, 4, 8, generator=torch.Generator().manual_seed(5))
    plain = gen.caption(spatial.mean(1), spatial, n=3)
    avoid = sorted({w for per in plain for c in per for w in c.text.split()})[:2]
    got = gen.caption(spatial.mean(1), spatial, n=3, avoid=[avoid, avoid, []])
    for per in got[:2]:
        for c in per:
            assert c.labels == () and not set(c.text.split()) & set(avoid), c
    assert [c.text for c in got[2]] == [c.text for c in plain[2]]
    unchanged = gen.caption(spatial.mean(1), spatial, n=3, avoid=[[], [], []])
    assert [[c.text for c in per] for per in unchanged] == [[c.text for c in per] for per in plain]
