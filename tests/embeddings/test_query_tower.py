"""manage.py build_query_encoder and embeddings/services/query_tower.py: the static query tower
built from the database's captions with the real MiniLM (its vectors, tokenizer and the text
cache are real). Faked: the distillation (one MiniLM forward per word piece, ~80 s; its rows are
tested in tests/embeddings/ml/test_static_text.py) returns a seeded random table, and the
1,000 ImageNet names are cut to two."""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from embeddings import runtime
from embeddings.ml import static_text
from embeddings.ml.query_encoders import read_sidecar
from embeddings.ml.static_text import static_path
from embeddings.models import Caption
from embeddings.services import query_tower
from tests.factories import CaptionFactory, CollectionFactory, make_image

pytestmark = pytest.mark.django_db
CAPTIONS = ["a brown dog runs along the beach", "two children play in the snow", "a red rocket on a launch pad"]


@pytest.fixture
def corpus(monkeypatch):
    runtime.reset()
    collection = CollectionFactory()
    image = make_image(collection, seed=1)
    for text in CAPTIONS + CAPTIONS[:1]:  # a repeated caption is one sentence
        CaptionFactory(image=image, text=text, source=Caption.Source.IMPORTED)
    CaptionFactory(image=image, text="a generated caption about a cat", source=Caption.Source.GENERATED)
    monkeypatch.setattr(query_tower, "load_class_names", lambda: ["tench, Tinca tinca", "goldfish"])
    distilled = []

    def distil(encoder, progress=None):
        distilled.append(encoder.identity)
        rng = np.random.default_rng(0)
        return 0.01 * rng.normal(size=(len(encoder.tokenizer), 384)).astype(np.float32)

    monkeypatch.setattr(static_text, "distil_vectors", distil)
    yield distilled
    runtime.reset()


def test_the_tower_is_fitted_on_people_captions_and_class_names_and_served(corpus, settings):
    phases = set()
    summary = query_tower.static_tower_build(epochs=3, on_progress=lambda phase, done, total: phases.add(phase))
    # 3 distinct human/imported captions (not the generated one), 3 names, 3 "a photo of a ..." prompts
    assert (summary.captions, summary.sentences) == (4, 9)
    assert summary.sentences_encoded == 9 and summary.epochs == 3 and len(summary.loss) == 3
    assert summary.loss[-1] < summary.loss[0]
    assert phases == {"encode", "fit"}  # the faked distillation reports nothing
    identity = runtime.text_encoder().identity
    path = Path(summary.path)
    assert path == static_path(Path(settings.MODEL_DIR) / "query-encoders", identity) and path.is_file()
    meta = read_sidecar(path)
    assert meta["sentences"] == 9 and meta["source"] == identity and meta["fit"]["epochs"] == 3

    # a rebuild reads the sentence vectors from the text cache: nothing is encoded again
    assert query_tower.static_tower_build(epochs=3).sentences_encoded == 0

    settings.LOUPE_QUERY_ENCODER = "static"
    runtime.reset()
    tower = runtime.query_text_encoder()
    assert tower.kind == "static"
    fp32 = runtime.encode_texts_base(CAPTIONS)
    got = runtime.encode_queries_base(CAPTIONS)
    assert got.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    # fitted towards MiniLM: each caption is nearer its own fp32 vector than the others'
    assert (np.argmax(got @ fp32.T, axis=1) == np.arange(3)).all()


def test_without_a_built_tower_static_serves_onnx_int8_and_says_so(corpus, settings, caplog):
    pytest.importorskip("onnxruntime")
    settings.LOUPE_QUERY_ENCODER = "static"
    runtime.reset()
    with caplog.at_level(logging.ERROR, logger="embeddings.runtime"):
        encoder = runtime.query_text_encoder()
    assert encoder.kind == "onnx-int8"
    assert "build_query_encoder" in caplog.text and "onnx-int8" in caplog.text
    assert runtime.encode_queries_base(CAPTIONS[:1]).shape == (1, 384)


def test_the_command_prints_its_summary_and_refuses_zero_epochs(corpus):
    out = io.StringIO()
    call_command("build_query_encoder", "--epochs", "1", "--json", "--no-progress", stdout=out)
    body = json.loads(out.getvalue())
    assert body["sentences"] == 9 and body["epochs"] == 1 and Path(body["path"]).is_file()
    assert corpus == [runtime.text_encoder().identity]
    text = io.StringIO()
    call_command("build_query_encoder", "--epochs", "1", "--no-progress", stdout=text)
    assert "LOUPE_QUERY_ENCODER=static" in text.getvalue() and "9 sentences" in text.getvalue()
    with pytest.raises(CommandError, match="at least 1"):
        call_command("build_query_encoder", "--epochs", "0", "--no-progress")
