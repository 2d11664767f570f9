"""Default models in models/: exported as float16, registered by loupe_setup on a fresh install."""
from __future__ import annotations

import json

import numpy as np
import pytest

from embeddings.ml.caption_generator import load_captioner
from embeddings.ml.embedder import JointEmbedder
from embeddings.models import Image, ModelVersion
from tests.training.conftest import TINY_CAPTIONER, TINY_EMBEDDING
from tests.training.fakes import fake_image_features, fake_text_vectors
from training import services
from training.models import ModelSwitch
from training.shipped import shipped_model_export, shipped_model_measure, shipped_models_register

pytestmark = pytest.mark.django_db(transaction=True)


def train(collection, kind, config):
    run = services.training_run_start(kind=kind, collections=[collection], config_overrides=config, user=None,
                                      enqueue=False)
    return services.training_run_execute(run.pk).model_version


@pytest.fixture
def shipped_root(tiny_collection, fake_encoders, tmp_path, settings):
    root = tmp_path / "repo-models"
    one = {"epochs": 1}
    emb = train(tiny_collection, "embedding", {**TINY_EMBEDDING, "loop": {**TINY_EMBEDDING["loop"], **one}})
    cap = train(tiny_collection, "captioner", {**TINY_CAPTIONER, "loop": {**TINY_CAPTIONER["loop"], **one}})
    shipped_model_export(version=emb, name="embedding-default", root=root, card={"command": "manage.py train"})
    shipped_model_export(version=cap, name="captioner-default", root=root)
    reference = JointEmbedder.from_checkpoint(settings.MODEL_DIR / emb.directory, fake_text_vectors)
    ModelVersion.objects.exclude(family="conse").delete()
    return root, reference


def test_export_halves_the_weights_and_still_loads(shipped_root):
    root, reference = shipped_root
    manifest = json.loads((root / "shipped.json").read_text())
    assert [m["name"] for m in manifest["models"]] == ["embedding-default", "captioner-default"]
    assert manifest["models"][0]["metrics"]["command"] == "manage.py train"
    shipped = JointEmbedder.from_checkpoint(root / "embedding-default", fake_text_vectors)
    feats = fake_image_features([1, 2, 3])
    assert np.allclose(shipped.encode_features(feats), reference.encode_features(feats), atol=2e-2)
    assert load_captioner(root / "captioner-default").config.decoder == "show_tell"
    full = sum(p.stat().st_size for p in root.glob("embedding-default/*.safetensors"))
    params = sum(v.numel() for v in reference.model.state_dict().values())
    assert full < params * 2 + 4096  # two bytes per weight


def test_fresh_install_activates_the_shipped_models_and_keeps_conse(shipped_root, conse_v0):
    root, _ = shipped_root
    assert not Image.objects.filter(status=Image.Status.READY).exists()  # uploaded, not processed yet
    lines = shipped_models_register(root)
    assert all("active" in line for line in lines), lines
    emb = ModelVersion.objects.get(kind="embedding", status="active")
    assert emb.name == "embedding-default" and emb.parent == conse_v0 and emb.files
    assert ModelVersion.objects.get(kind="captioner", status="active").name == "captioner-default"
    conse_v0.refresh_from_db()
    assert conse_v0.status == "retired"  # still there, can be promoted back
    again = shipped_models_register(root)
    assert all("already registered" in line for line in again)
    assert ModelVersion.objects.filter(name="embedding-default").count() == 1


def test_install_with_images_promotes_the_shipped_embedding_in_the_background(shipped_root, conse_v0):
    root, _ = shipped_root
    Image.objects.update(status=Image.Status.READY)  # already processed with ConSE v0
    lines = shipped_models_register(root)
    assert "promotion started" in lines[0]
    switch = ModelSwitch.objects.get(kind="embedding")
    assert switch.version.name == "embedding-default" and switch.status == "queued"
    assert ModelVersion.objects.get(kind="embedding", status="active") == conse_v0


@pytest.mark.parametrize("kind", ["embedding", "captioner"])
def test_retrain_defaults_are_the_recipe_of_the_shipped_model(kind):
    """The admin's Retrain form (and `manage.py train` without --set) trains what ships: the
    default config equals the training config stored in the shipped checkpoint, key by key."""
    from django.conf import settings

    from training.services.configs import default_config

    name = {"embedding": "embedding-open-vocab", "captioner": "captioner-flickr8k"}[kind]
    from training.ml.config import TrainConfig

    shipped = json.loads((settings.BASE_DIR / "models" / name / "checkpoint.json").read_text())
    stored = shipped["meta"]["train_config"]
    # Fields added after the model shipped (issue 17: loop.optimizer, parallel, workers) are
    # absent from its file and read as their defaults, which are what it was trained with.
    assert set(stored["loop"]) <= set(default_config(kind).to_dict()["loop"])
    assert default_config(kind).to_dict() == TrainConfig.from_dict(stored).to_dict()


def test_the_shipped_embedding_serves_through_the_embedder_api():
    """models/embedding-open-vocab (issue 20) loads in the runtime's JointEmbedder and answers
    encode_texts / encode_features / cell_scores with unit vectors of its recorded width."""
    from django.conf import settings

    from embeddings.ml.prior_heads import PriorEmbedding

    root = settings.BASE_DIR / "models"
    entry = next(m for m in json.loads((root / "shipped.json").read_text())["models"] if m["kind"] == "embedding")
    embedder = JointEmbedder.from_checkpoint(root / entry["directory"], fake_text_vectors)
    assert isinstance(embedder.model, PriorEmbedding) and embedder.dim == entry["dim"] == 896
    feats = fake_image_features([1, 2])
    img, txt = embedder.encode_features(feats), embedder.encode_texts(["a cat", "a rocket"])
    assert img.shape == (2, 896) and txt.shape == (2, 896)
    assert np.allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(txt, axis=1), 1, atol=1e-5)
    assert embedder.cell_scores(feats["spatial"][0], txt[0]).shape == (49,)


def test_export_stores_decoding_defaults_and_keeps_a_replaced_model_in_place(shipped_root, tiny_collection,
                                                                               fake_encoders):
    root, _ = shipped_root
    one = {"epochs": 1}
    cap = train(tiny_collection, "captioner", {**TINY_CAPTIONER, "loop": {**TINY_CAPTIONER["loop"], **one}})
    shipped_model_export(version=cap, name="embedding-first", root=root)  # a third entry, appended
    shipped_model_export(version=cap, name="captioner-default", root=root,
                         decoding={"beam_size": 4, "length_penalty": 0.25, "no_repeat_ngram_size": 3})
    manifest = json.loads((root / "shipped.json").read_text())
    assert [m["name"] for m in manifest["models"]] == ["embedding-default", "captioner-default", "embedding-first"]
    decoding = load_captioner(root / "captioner-default").decoding
    assert (decoding.beam_size, decoding.length_penalty, decoding.no_repeat_ngram_size) == (4, 0.25, 3)
    assert load_captioner(root / "embedding-first").decoding.beam_size == 3  # untouched: the trained default


def test_export_rejects_bad_decoding_and_writes_nothing(shipped_root, tiny_collection, fake_encoders):
    root, _ = shipped_root
    before = (root / "shipped.json").read_bytes()
    cap = train(tiny_collection, "captioner", {**TINY_CAPTIONER, "loop": {**TINY_CAPTIONER["loop"], "epochs": 1}})
    emb = train(tiny_collection, "embedding", {**TINY_EMBEDDING, "loop": {**TINY_EMBEDDING["loop"], "epochs": 1}})
    with pytest.raises((TypeError, ValueError)):  # not a DecodingConfig field
        shipped_model_export(version=cap, name="captioner-new", root=root, decoding={"beam_width": 5})
    with pytest.raises(ValueError, match="captioners"):
        shipped_model_export(version=emb, name="embedding-new", root=root, decoding={"beam_size": 5})
    assert (root / "shipped.json").read_bytes() == before
    assert not (root / "captioner-new").exists() and not (root / "embedding-new").exists()


def test_measure_scores_the_shipped_copy_and_stores_its_metrics(shipped_root, tiny_collection, fake_encoders):
    root, _ = shipped_root
    versions_before = set(ModelVersion.objects.values_list("pk", flat=True))
    metrics = shipped_model_measure(name="embedding-default", collections=[tiny_collection],
                                    ood_collections=[tiny_collection], root=root)
    entry = next(m for m in json.loads((root / "shipped.json").read_text())["models"]
                 if m["name"] == "embedding-default")
    assert entry["metrics"]["dev"] == metrics["dev"] and 0 <= metrics["dev"]["t2i_r1"] <= 100
    assert entry["metrics"]["ood_dev"] == metrics["ood_dev"]
    assert "float16" in entry["metrics"]["measured"] and "tiny dev (4 images" in entry["metrics"]["measured"]
    assert entry["metrics"]["command"] == "manage.py train"  # the rest of the card is kept
    assert set(ModelVersion.objects.values_list("pk", flat=True)) == versions_before  # transient version gone
    cap = shipped_model_measure(name="captioner-default", collections=[tiny_collection],
                                ood_collections=[tiny_collection], root=root)
    assert "bleu_4" in cap["dev"] and "ood_dev" not in cap  # out-of-domain recall is for embeddings
    with pytest.raises(ValueError, match="not in"):
        shipped_model_measure(name="nope", collections=[tiny_collection], root=root)
