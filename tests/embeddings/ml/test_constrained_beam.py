"""Tests for embeddings/ml/constrained_beam.py: exhaustive references on a tiny real decoder."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from embeddings.ml.caption_decoding import beam_search
from embeddings.ml.constrained_beam import Extension, constrained_beam_search
from tests.embeddings.ml.test_caption_decoding import feats, make_decoder, sequence_log_prob

torch.set_num_threads(1)

MAX_LEN = 4  # up to 3 words + <eos>: 39 candidate captions over the words 4, 5, 6


def constrained_optimum(model, pooled, spatial, constraints, *, max_len=MAX_LEN, replace=None, banned=()):
    """Best caption (by log-probability) containing one token of every constraint, by enumeration."""
    best = None
    words = [w for w in [4, 5, 6] if w not in banned] + ([] if replace is None else list(replace))
    for n in range(1, max_len):
        for seq in itertools.product(words, repeat=n):
            if not all(any(t in alt for t in seq) for alt in constraints):
                continue
            if replace is not None and any(seq.count(x) > 1 for x in replace):
                continue  # an extra word is emitted at most once
            read = tuple(replace.get(t, t) if replace else t for t in seq)
            lp = sequence_log_prob(model, pooled, spatial, read, max_len=max_len)
            if best is None or lp > best[0]:
                best = (lp, seq)
    return best


def test_no_constraints_is_plain_beam_search() -> None:
    model = make_decoder(max_len=6)
    pooled, spatial = feats(4)
    for k in (1, 3):
        plain = beam_search(model, pooled, spatial, beam_size=k, n_best=k)
        got = constrained_beam_search(model, pooled, spatial, [[]] * 4, beam_size=k, n_best=k)
        assert [[h.tokens for h in hs] for hs in got] == [[h.tokens for h in hs] for hs in plain]
        assert [h.score for hs in got for h in hs] == pytest.approx([h.score for hs in plain for h in hs])


@pytest.mark.parametrize("constraints", [[[5]], [[6]], [[4, 6]], [[4], [6]], [[5], [4, 6]]])
def test_wide_beam_finds_the_constrained_optimum(constraints) -> None:
    model = make_decoder("attention", max_len=MAX_LEN)
    pooled, spatial = feats(2)
    got = constrained_beam_search(model, pooled, spatial, [constraints] * 2, beam_size=39)
    for b in range(2):
        lp, seq = constrained_optimum(model, pooled[b:b + 1], spatial[b:b + 1], constraints)
        assert got[b][0].tokens == seq
        assert got[b][0].log_prob == pytest.approx(lp, abs=1e-4)


def test_a_mixed_batch_constrains_only_the_images_with_constraints() -> None:
    model = make_decoder(max_len=6)
    pooled, spatial = feats(3)
    plain = beam_search(model, pooled, spatial, beam_size=3)
    got = constrained_beam_search(model, pooled, spatial, [[], [[6]], [[4], [5]]], beam_size=3)
    assert got[0][0].tokens == plain[0][0].tokens
    assert 6 in got[1][0].tokens
    assert {4, 5} <= set(got[2][0].tokens)


def test_impossible_constraints_fall_back_to_the_unconstrained_beam() -> None:
    model = make_decoder(max_len=2)  # one word + <eos>: two different words cannot both appear
    pooled, spatial = feats(2)
    plain = beam_search(model, pooled, spatial, beam_size=3, n_best=2)
    got = constrained_beam_search(model, pooled, spatial, [[[4], [5]]] * 2, beam_size=3, n_best=2)
    assert [[h.tokens for h in hs] for hs in got] == [[h.tokens for h in hs] for hs in plain]


def test_an_out_of_vocabulary_word_reads_as_its_stand_in() -> None:
    model = make_decoder(max_len=MAX_LEN)  # vocabulary of 7: id 7 is the extra word
    pooled, spatial = feats(2)
    ext = Extension(7, words=("teapot",), stand_ins=(5,))
    got = constrained_beam_search(model, pooled, spatial, [[[7]]] * 2, extension=ext, beam_size=39)
    for b in range(2):
        lp, seq = constrained_optimum(model, pooled[b:b + 1], spatial[b:b + 1], [[7]], replace={7: 5})
        assert got[b][0].tokens == seq
        assert got[b][0].tokens.count(7) == 1
        assert got[b][0].log_prob == pytest.approx(lp, abs=1e-4)
    assert ext.word_of(7) == "teapot" and ext.id_of("teapot") == 7


def test_extra_words_are_never_emitted_unasked() -> None:
    model = make_decoder(max_len=6)
    pooled, spatial = feats(3)
    ext = Extension(7, words=("teapot", "kettle"), stand_ins=(5, 6))
    got = constrained_beam_search(model, pooled, spatial, [[], [[8]], [[4]]], extension=ext, beam_size=3,
                                  n_best=3)
    assert all(7 not in h.tokens and 8 not in h.tokens for h in got[0] + got[2])
    assert all(h.tokens.count(8) == 1 and 7 not in h.tokens for h in got[1])


def test_bad_arguments_are_refused() -> None:
    model = make_decoder()
    pooled, spatial = feats(1)
    with pytest.raises(ValueError, match="one constraint list per image"):
        constrained_beam_search(model, pooled, spatial, [[], []])
    with pytest.raises(ValueError, match="token ids"):
        constrained_beam_search(model, pooled, spatial, [[[99]]])
    with pytest.raises(ValueError, match="at most"):
        constrained_beam_search(model, pooled, spatial, [[[4], [5], [6], [4]]])
    with pytest.raises(ValueError, match="stand-ins"):
        Extension(7, words=("x",), stand_ins=(9,))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 50), beam=st.integers(1, 4), n_best=st.integers(1, 4),
       constraints=st.lists(st.sets(st.sampled_from([4, 5, 6]), min_size=1, max_size=2), min_size=1, max_size=2),
       max_len=st.integers(3, 7))
def test_every_hypothesis_contains_its_constraints(seed, beam, n_best, constraints, max_len) -> None:
    n_best = min(n_best, beam)
    model = make_decoder(seed=seed, max_len=max_len)
    pooled, spatial = feats(2, seed=seed)
    alts = [sorted(c) for c in constraints]
    got = constrained_beam_search(model, pooled, spatial, [alts, alts], beam_size=beam, n_best=n_best,
                                  no_repeat_ngram_size=2)
    for hyps in got:
        assert len(hyps) == n_best
        ok = [all(any(t in alt for t in h.tokens) for alt in alts) for h in hyps]
        # max_len >= 3 leaves room for two words: the best caption always holds the constraints.
        # Fewer accepting captions than n_best may exist (max_len 3, constraints {4}, {5}: only
        # "4 5" and "5 4"); the plain beam then fills in AFTER them, each group best first.
        assert ok[0] and ok == sorted(ok, reverse=True)
        for group in ([h for h, o in zip(hyps, ok) if o], [h for h, o in zip(hyps, ok) if not o]):
            assert [h.score for h in group] == sorted((h.score for h in group), reverse=True)


def test_banned_words_are_never_said_but_a_constraint_word_stays_allowed() -> None:
    model = make_decoder(max_len=MAX_LEN)
    pooled, spatial = feats(2)
    got = constrained_beam_search(model, pooled, spatial, [[[5]], [[5]]], banned=[[4], [4, 5]], beam_size=39)
    for b in range(2):
        lp, seq = constrained_optimum(model, pooled[b:b + 1], spatial[b:b + 1], [[5]], banned={4})
        assert got[b][0].tokens == seq and 4 not in seq
    with pytest.raises(ValueError, match="banned list per image"):
        constrained_beam_search(model, pooled, spatial, [[], []], banned=[[4]])
