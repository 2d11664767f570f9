"""Tests for embeddings/ml/caption_generator.py: captioning API and checkpoint round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from embeddings.ml.caption_decoding import Ensemble, beam_search
from embeddings.ml.caption_generator import (
    CaptionGenerator,
    DecodingConfig,
    GeneratedCaption,
    load_captioner,
    save_captioner,
)
from embeddings.ml.captioner import CaptionerConfig, build_decoder
from embeddings.ml.checkpoint import CorruptCheckpoint, IncompatibleCheckpoint, save_checkpoint
from embeddings.ml.vocab import Vocabulary

torch.set_num_threads(1)

VOCAB = Vocabulary(["a", "dog", "runs", "on", "grass", "cat", "sleeps"])


def make_generator(kind: str = "attention", seed: int = 0, **decoding: object) -> CaptionGenerator:
    torch.manual_seed(seed)
    config = CaptionerConfig(decoder=kind, vocab_size=len(VOCAB), feature_dim=8, num_cells=4, embed_dim=6,
                             hidden_dim=10, context_dim=7, attention_dim=5, dropout=0.0, max_len=6)
    return CaptionGenerator(build_decoder(config), VOCAB, decoding=DecodingConfig(**decoding))  # type: ignore[arg-type]


def feats(batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    spatial = 3 * torch.rand(batch, 4, 8, generator=torch.Generator().manual_seed(1))
    return spatial.mean(dim=1), spatial


def test_caption_returns_n_best_texts_per_image() -> None:
    gen = make_generator()
    pooled, spatial = feats()
    out = gen.caption(pooled, spatial, beam_size=4, n=3)
    assert len(out) == 3 and all(len(c) == 3 for c in out)
    for caps in out:
        assert all(isinstance(c, GeneratedCaption) and c.text for c in caps)
        assert [c.score for c in caps] == sorted((c.score for c in caps), reverse=True)
        assert all(set(c.text.split()) <= set(VOCAB.words[4:]) for c in caps)


def test_caption_text_matches_beam_search_tokens() -> None:
    gen = make_generator(length_penalty=0.5)
    pooled, spatial = feats()
    hyps = beam_search(gen.decoder, pooled, spatial, beam_size=3, length_penalty=0.5)
    texts = [c[0].text for c in gen.caption(pooled, spatial, beam_size=3)]
    assert texts == [VOCAB.decode(h[0].tokens) for h in hyps]


def test_caption_one_equals_batched_caption() -> None:
    gen = make_generator()
    pooled, spatial = feats()
    batched = gen.caption(pooled, spatial, beam_size=3, n=2)
    one = gen.caption_one(pooled[1], spatial[1], beam_size=3, n=2)
    assert [c.text for c in one] == [c.text for c in batched[1]]
    assert [c.log_prob for c in one] == pytest.approx([c.log_prob for c in batched[1]], abs=1e-5)


def test_greedy_path_is_used_for_beam_of_one() -> None:
    gen = make_generator()
    pooled, spatial = feats()
    greedy = gen.caption(pooled, spatial, beam_size=1)
    beam1 = beam_search(gen.decoder, pooled, spatial, beam_size=1)
    assert [g[0].text for g in greedy] == [VOCAB.decode(b[0].tokens) for b in beam1]


def test_attention_captioner_requires_spatial_and_show_tell_does_not() -> None:
    pooled, _ = feats()
    with pytest.raises(ValueError, match="spatial"):
        make_generator("attention").caption(pooled)
    assert len(make_generator("show_tell").caption(pooled, beam_size=2)) == 3


def test_generator_rejects_vocabulary_size_mismatch() -> None:
    gen = make_generator()
    with pytest.raises(ValueError, match="vocab_size"):
        CaptionGenerator(gen.decoder, Vocabulary(["a"]))


@pytest.mark.parametrize("kind", ["show_tell", "attention"])
def test_checkpoint_round_trip_gives_identical_captions(tmp_path: Path, kind: str) -> None:
    gen = make_generator(kind, beam_size=3, length_penalty=0.4, no_repeat_ngram_size=2)
    pooled, spatial = feats()
    path = save_captioner(tmp_path / "cap", gen.decoder, VOCAB, decoding=gen.decoding, extra_meta={"note": "x"})
    loaded = load_captioner(path)
    assert loaded.config == gen.config and loaded.decoding == gen.decoding
    assert loaded.vocab.words == VOCAB.words
    assert loaded.caption(pooled, spatial, n=2) == gen.caption(pooled, spatial, n=2)
    assert json.loads(path.read_text())["meta"]["note"] == "x"


def test_ensemble_checkpoint_round_trip(tmp_path: Path) -> None:
    a, b = make_generator(seed=0), make_generator(seed=1)
    ens = Ensemble([a.decoder, b.decoder])
    pooled, spatial = feats()
    expected = CaptionGenerator(ens, VOCAB).caption(pooled, spatial, beam_size=3)
    loaded = load_captioner(save_captioner(tmp_path / "ens", ens, VOCAB))
    assert isinstance(loaded.decoder, Ensemble) and len(loaded.decoder.members) == 2
    assert loaded.caption(pooled, spatial, beam_size=3) == expected


def test_load_rejects_other_kinds_and_mismatched_weights(tmp_path: Path) -> None:
    gen = make_generator()
    path = save_captioner(tmp_path / "cap", gen.decoder, VOCAB)
    manifest = json.loads(path.read_text())
    other = save_checkpoint(tmp_path / "emb", tensors={"w": torch.zeros(1)}, config={}, meta={"kind": "embedding"})
    with pytest.raises(IncompatibleCheckpoint):
        load_captioner(other)
    bad_config = {**manifest["config"], "hidden_dim": 11}
    tensors = dict(gen.decoder.state_dict())
    wrong = save_checkpoint(tmp_path / "wrong", tensors=tensors, config=bad_config, meta=manifest["meta"])
    with pytest.raises(IncompatibleCheckpoint, match="weights"):
        load_captioner(wrong)
    unknown = save_checkpoint(tmp_path / "unk", tensors=tensors, config={**manifest["config"], "x": 1},
                              meta=manifest["meta"])
    with pytest.raises(IncompatibleCheckpoint):
        load_captioner(unknown)


def test_load_detects_corrupted_weights(tmp_path: Path) -> None:
    gen = make_generator()
    path = save_captioner(tmp_path / "cap", gen.decoder, VOCAB)
    weights = next(tmp_path.joinpath("cap").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint):
        load_captioner(path)


def test_decoding_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown"):
        DecodingConfig.from_dict({"beam": 3})
    assert DecodingConfig.from_dict(DecodingConfig(beam_size=5).to_dict()).beam_size == 5
