"""POST /api/v1/captions/ with label-constrained decoding: a tiny real captioner over the real
Lite0 features of stored images; the response says which zero-shot labels the captions name."""
from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from embeddings import encoding, runtime
from embeddings.ml.caption_generator import CaptionGenerator, DecodingConfig
from embeddings.ml.captioner import CaptionerConfig, build_decoder
from embeddings.ml.vocab import Vocabulary
from embeddings.ml.zero_shot_labels import word_forms
from embeddings.models import ModelVersion
from tests.search.conftest import colour_jpeg, ingest


def word_vectors(texts: list[str]) -> np.ndarray:
    """Deterministic unit vectors per text (the stand-in choice is not what is tested here)."""
    rows = [np.random.default_rng(zlib.crc32(t.encode())).standard_normal(16) for t in texts]
    vecs = np.stack(rows).astype(np.float32)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


@pytest.fixture
def tiny_captioner(db, monkeypatch):
    torch.manual_seed(0)
    vocab = Vocabulary(["a", "photo", "of", "dog", "on", "the", "grass"])
    config = CaptionerConfig(decoder="attention", vocab_size=len(vocab), feature_dim=1280, num_cells=49,
                             embed_dim=8, hidden_dim=16, context_dim=8, attention_dim=8, dropout=0.0, max_len=8)
    generator = CaptionGenerator(build_decoder(config), vocab,
                                 decoding=DecodingConfig(beam_size=3, constrain_labels=True, label_threshold=1e-6))
    generator.word_vectors = word_vectors
    version = ModelVersion.objects.create(kind=ModelVersion.Kind.CAPTIONER, name="tiny", family="captioner",
                                          status=ModelVersion.Status.ACTIVE)
    monkeypatch.setattr(runtime, "active_captioner", lambda: (version, generator))
    return generator


@pytest.fixture
def picture(collection):
    return ingest(collection, colour_jpeg((250, 120, 10), (96, 96)))


def names(text: str, word: str) -> bool:
    return bool(set(text.split()) & word_forms(word))


def test_the_stored_decoding_names_the_confident_label_and_says_so(api, picture, tiny_captioner):
    expected = tiny_captioner.zero_shot_labels(encoding.features_for([picture.pk])["logits"])[0]
    assert len(expected) == 1  # the threshold is tiny: the top label word is always confident
    body = api.post("/api/v1/captions/", {"image_id": picture.pk, "n": 3}, format="json").json()
    assert body["labels"] == expected and body["beam"] == 3
    assert len(body["captions"]) == 3
    for caption in body["captions"]:  # every n-best caption names it, in or out of the vocabulary
        assert caption["labels"] == expected and names(caption["text"], expected[0]), caption


def test_labels_can_be_turned_off_and_greedy_is_never_constrained(api, picture, tiny_captioner):
    word = tiny_captioner.zero_shot_labels(encoding.features_for([picture.pk])["logits"])[0][0]
    off = api.post("/api/v1/captions/", {"image_id": picture.pk, "labels": False}, format="json").json()
    greedy = api.post("/api/v1/captions/", {"image_id": picture.pk, "beam": 1}, format="json").json()
    for body in (off, greedy):
        assert body["labels"] == [] and body["captions"][0]["labels"] == []
    plain = tiny_captioner.caption(*_feats(picture), beam_size=3)[0][0].text
    assert off["captions"][0]["text"] == plain
    if not names(plain, word):  # the guided caption differs exactly when the plain one misses the label
        on = api.post("/api/v1/captions/", {"image_id": picture.pk}, format="json").json()
        assert on["captions"][0]["text"] != plain


def test_an_upload_is_guided_too_and_n_beyond_the_beam_is_still_refused(api, tiny_captioner):
    upload = colour_jpeg((30, 200, 40), (96, 96))
    from django.core.files.uploadedfile import SimpleUploadedFile

    resp = api.post("/api/v1/captions/", {"image": SimpleUploadedFile("x.jpg", upload, "image/jpeg")},
                    format="multipart")
    assert resp.status_code == 200, resp.content
    assert len(resp.json()["labels"]) == 1
    too_many = api.post("/api/v1/captions/", {"image": SimpleUploadedFile("x.jpg", upload, "image/jpeg"), "n": 4},
                        format="multipart")
    assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "n_exceeds_beam"


def test_the_schema_documents_the_labels(anon_api):
    schema = anon_api.get("/api/schema/", {"format": "json"}).json()
    output = schema["components"]["schemas"]["CaptionGenerateOutput"]["properties"]
    assert output["labels"]["type"] == "array"
    json_input = schema["components"]["schemas"]["CaptionGenerateJsonInputRequest"]["properties"]
    assert json_input["labels"]["type"] == "boolean"


def _feats(picture):
    feats = encoding.features_for([picture.pk])
    return torch.from_numpy(feats["pooled"]), torch.from_numpy(feats["spatial"])


def test_background_captioning_uses_the_stored_label_guidance(picture, tiny_captioner, monkeypatch):
    from embeddings.models import Caption

    version = ModelVersion.objects.get(name="tiny")
    monkeypatch.setattr(runtime, "captioner_for", lambda v: tiny_captioner)
    word = tiny_captioner.zero_shot_labels(encoding.features_for([picture.pk])["logits"])[0][0]
    assert encoding.images_caption(image_ids=[picture.pk], version=version) == 1
    saved = Caption.objects.get(image=picture, model_version=version)
    assert names(saved.text, word), saved.text
