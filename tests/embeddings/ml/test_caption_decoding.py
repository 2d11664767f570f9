"""Tests for embeddings/ml/caption_decoding.py against exhaustive search and greedy references."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from embeddings.ml.caption_decoding import Ensemble, beam_search, greedy_decode
from embeddings.ml.captioner import CaptionerConfig, build_decoder
from embeddings.ml.vocab import BOS_ID, EOS_ID, UNK_ID

torch.set_num_threads(1)

WORDS = [4, 5, 6]  # the non-special ids of a 7-token vocabulary


def make_decoder(kind: str = "attention", *, seed: int = 0, vocab_size: int = 7, max_len: int = 4):
    torch.manual_seed(seed)
    config = CaptionerConfig(decoder=kind, vocab_size=vocab_size, feature_dim=8, num_cells=4, embed_dim=6,
                             hidden_dim=10, context_dim=7, attention_dim=5, dropout=0.0, max_len=max_len)
    model = build_decoder(config).eval()
    # Sharpen the output so the distributions are far from uniform (beam != greedy is likely).
    with torch.no_grad():
        model.out.bias.normal_(0, 2.0)
    return model


def feats(batch: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    spatial = 3 * torch.rand(batch, 4, 8, generator=g)
    return spatial.mean(dim=1), spatial


def sequence_log_prob(model, pooled, spatial, tokens: tuple[int, ...], *, max_len: int) -> float:
    """Teacher-forced log-probability of tokens + <eos> under the decoder's generation rules."""
    inputs = torch.tensor([[BOS_ID, *tokens]])
    logp = F.log_softmax(model(pooled, spatial, inputs)["logits"][0].double(), dim=-1)  # (T, V)
    total = 0.0
    for t, target in enumerate([*tokens, EOS_ID]):
        row = logp[t].clone()
        row[[0, BOS_ID, UNK_ID]] = -math.inf  # <pad>, <bos>, <unk> are never generated
        if t == 0:
            row[EOS_ID] = -math.inf
        if t == max_len - 1:
            keep = row[EOS_ID].item()
            row[:] = -math.inf
            row[EOS_ID] = keep
        total += row[target].item()
    return total


def all_sequences(max_len: int) -> list[tuple[int, ...]]:
    return [seq for n in range(1, max_len) for seq in itertools.product(WORDS, repeat=n)]


@pytest.mark.parametrize("kind", ["show_tell", "attention"])
def test_wide_beam_finds_the_exhaustive_search_optimum(kind: str) -> None:
    max_len = 4  # up to 3 words + <eos>: 3 + 9 + 27 = 39 candidate captions
    model = make_decoder(kind, max_len=max_len)
    pooled, spatial = feats(2)
    got = beam_search(model, pooled, spatial, beam_size=39, n_best=5)
    for b in range(2):
        scored = sorted(((sequence_log_prob(model, pooled[b:b + 1], spatial[b:b + 1], s, max_len=max_len), s)
                         for s in all_sequences(max_len)), reverse=True)
        assert [h.tokens for h in got[b]] == [s for _, s in scored[:5]]
        for hyp, (lp, _) in zip(got[b], scored):
            assert hyp.log_prob == pytest.approx(lp, abs=1e-4)


def test_beam_of_one_equals_greedy() -> None:
    model = make_decoder(max_len=6)
    pooled, spatial = feats(5)
    greedy = greedy_decode(model, pooled, spatial)
    beam = beam_search(model, pooled, spatial, beam_size=1)
    assert [h.tokens for h in greedy] == [b[0].tokens for b in beam]
    for g, b in zip(greedy, beam):
        assert g.log_prob == pytest.approx(b[0].log_prob, abs=1e-5)


def test_batched_beam_search_equals_one_image_at_a_time() -> None:
    model = make_decoder(max_len=6)
    pooled, spatial = feats(5)
    batched = beam_search(model, pooled, spatial, beam_size=3, n_best=3, batch_size=2)
    for b in range(5):
        single = beam_search(model, pooled[b:b + 1], spatial[b:b + 1], beam_size=3, n_best=3)[0]
        assert [h.tokens for h in batched[b]] == [h.tokens for h in single]


def test_n_best_are_sorted_distinct_and_scored_with_length_penalty() -> None:
    model = make_decoder(max_len=6)
    pooled, spatial = feats(3)
    for alpha in (0.0, 0.7):
        for hyps in beam_search(model, pooled, spatial, beam_size=4, n_best=4, length_penalty=alpha):
            assert len(hyps) == 4
            assert len({h.tokens for h in hyps}) == 4
            assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
            for h in hyps:
                assert h.score == pytest.approx(h.log_prob / (len(h.tokens) + 1) ** alpha)


def test_length_penalty_favours_longer_captions() -> None:
    model = make_decoder(vocab_size=9, max_len=8)
    with torch.no_grad():
        model.out.bias[EOS_ID] += 2.0  # make ending early attractive
    pooled, spatial = feats(8)
    short = beam_search(model, pooled, spatial, beam_size=4, length_penalty=0.0)
    long = beam_search(model, pooled, spatial, beam_size=4, length_penalty=2.0)
    assert sum(len(h[0].tokens) for h in long) > sum(len(h[0].tokens) for h in short)


def test_no_repeat_ngram_blocks_repeated_bigrams_and_unigrams() -> None:
    model = make_decoder(vocab_size=9, max_len=10)
    with torch.no_grad():
        model.out.bias[EOS_ID] -= 5.0  # long captions, which repeat without the constraint
    pooled, spatial = feats(4)
    free = beam_search(model, pooled, spatial, beam_size=3, n_best=3)

    def has_repeat(tokens: tuple[int, ...], n: int) -> bool:
        grams = [tokens[i:i + n] for i in range(len(tokens) - n + 1)]
        return len(grams) != len(set(grams))

    assert any(has_repeat(h.tokens, 2) for hyps in free for h in hyps)
    for n in (1, 2):
        blocked = beam_search(model, pooled, spatial, beam_size=3, n_best=3, no_repeat_ngram_size=n)
        assert not any(has_repeat(h.tokens, n) for hyps in blocked for h in hyps)


def test_unk_is_never_generated_unless_allowed() -> None:
    model = make_decoder(max_len=6)
    with torch.no_grad():
        model.out.bias[UNK_ID] += 20.0
    pooled, spatial = feats(3)
    assert all(UNK_ID not in h.tokens for h in greedy_decode(model, pooled, spatial))
    assert all(UNK_ID in h.tokens for h in greedy_decode(model, pooled, spatial, block_unk=False))


def test_captions_stop_at_max_len() -> None:
    model = make_decoder(max_len=5)
    with torch.no_grad():
        model.out.bias[EOS_ID] -= 50.0
    pooled, spatial = feats(2)
    assert all(len(h.tokens) == 4 for h in greedy_decode(model, pooled, spatial))
    assert all(len(h[0].tokens) == 4 for h in beam_search(model, pooled, spatial, beam_size=2))


def test_ensemble_of_copies_decodes_like_one_model_and_mixes_two() -> None:
    a, b = make_decoder(seed=0, max_len=6), make_decoder(seed=1, max_len=6)
    pooled, spatial = feats(4)
    solo = beam_search(a, pooled, spatial, beam_size=3)
    twins = beam_search(Ensemble([a, a]), pooled, spatial, beam_size=3)
    assert [h[0].tokens for h in solo] == [h[0].tokens for h in twins]
    for s, t in zip(solo, twins):
        assert s[0].log_prob == pytest.approx(t[0].log_prob, abs=1e-5)
    # A mixed ensemble's step is the log of the averaged probabilities.
    ens = Ensemble([a, b])
    mem = ens.encode(pooled, spatial)
    state = ens.init_state(mem)
    tokens = torch.full((4,), BOS_ID)
    mixed, _, _ = ens.step(tokens, state, mem)
    pa = F.softmax(a.step(tokens, a.init_state(a.encode(pooled, spatial)), a.encode(pooled, spatial))[0], -1)
    pb = F.softmax(b.step(tokens, b.init_state(b.encode(pooled, spatial)), b.encode(pooled, spatial))[0], -1)
    torch.testing.assert_close(mixed.exp(), (pa + pb) / 2, rtol=1e-5, atol=1e-6)


def test_beam_search_rejects_bad_widths() -> None:
    model = make_decoder()
    pooled, spatial = feats(1)
    with pytest.raises(ValueError):
        beam_search(model, pooled, spatial, beam_size=2, n_best=3)
    with pytest.raises(ValueError):
        beam_search(model, pooled, spatial, beam_size=0)


def test_multi_view_ensemble_reads_one_view_per_member() -> None:
    a = make_decoder(seed=0, max_len=6)
    pooled0, spatial0 = feats(3, seed=1)
    pooled1, spatial1 = feats(3, seed=2)
    pooled = torch.stack([pooled0, pooled1], dim=1)  # (B, V=2, F)
    spatial = torch.stack([spatial0, spatial1], dim=1)  # (B, V=2, N, F)
    # Both members on view 1 decode exactly like the single model on view 1.
    same = beam_search(Ensemble([a, a], views=[1, 1]), pooled, spatial, beam_size=3)
    solo = beam_search(a, pooled1, spatial1, beam_size=3)
    assert [h[0].tokens for h in same] == [h[0].tokens for h in solo]
    # Views 0 and 1: the first step mixes the two views' distributions.
    ens = Ensemble([a, a], views=[0, 1])
    mem = ens.encode(pooled, spatial)
    mixed, _, _ = ens.step(torch.full((3,), BOS_ID), ens.init_state(mem), mem)
    p0 = F.softmax(a.step(torch.full((3,), BOS_ID), a.init_state(a.encode(pooled0, spatial0)),
                          a.encode(pooled0, spatial0))[0], -1)
    p1 = F.softmax(a.step(torch.full((3,), BOS_ID), a.init_state(a.encode(pooled1, spatial1)),
                          a.encode(pooled1, spatial1))[0], -1)
    torch.testing.assert_close(mixed.exp(), (p0 + p1) / 2, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        Ensemble([a, a], views=[0])
    with pytest.raises(ValueError, match="multi-view"):
        ens.encode(pooled0, spatial0)
