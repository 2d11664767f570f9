"""The "paragraph" kind through the run machinery: start -> execute -> candidate version with progress,
loadable by the runtime; promotion flips statuses only; the admin's Retrain form offers it."""
from __future__ import annotations

import re

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse

from embeddings import runtime
from embeddings.ml.paragraph import SOURCE_INFERRED, SOURCE_MAPPED, SOURCE_TRAINED
from embeddings.models import Caption
from tests.factories import UserFactory
from tests.training.conftest import TINY_PARAGRAPH
from training import services
from training.models import ModelSwitch, TrainingRun
from training.services import promotion

pytestmark = pytest.mark.django_db(transaction=True)

def _run(collection, config=TINY_PARAGRAPH) -> TrainingRun:
    run = services.training_run_start(kind="paragraph", collections=[collection], config_overrides=config,
                                      enqueue=False)
    return services.training_run_execute(run.pk)


def test_paragraph_run_registers_a_doc2vec_candidate_with_progress(paragraph_collection, settings):
    seen: list[str] = []
    run = services.training_run_start(kind="paragraph", collections=[paragraph_collection],
                                      config_overrides=TINY_PARAGRAPH, enqueue=False)
    run = services.training_run_execute(run.pk, on_progress=lambda name, payload: seen.append(name))
    assert run.status == "succeeded", run.error
    assert run.total_epochs == run.epoch == 200 and run.step == run.total_steps == 200  # 100 passes x (DM, DBOW)
    assert [h["epoch"] for h in run.history] == list(range(1, 201))
    assert seen[0] == "start" and seen.count("step") == 200 and seen[-1] == "done"
    dev = run.history[-1]["dev"]
    assert set(dev) == {f"{t}_{k}" for t in ("p2i", "p2d") for k in ("r1", "r5", "r10", "medr")}
    assert "PV-DBOW epoch 100 done (pass 200/200" in run.log_tail
    assert "train loss" not in run.log_tail  # gensim reports none; the log does not invent one
    version = run.model_version
    assert (version.kind, version.family, version.status, version.dim) == ("paragraph", "doc2vec", "candidate", 32)
    assert version.metrics["dev"] == dev and version.parent is None and version.metrics["compared_with"] is None
    assert set(version.files) == {p.name for p in (settings.MODEL_DIR / version.directory).iterdir()}
    assert version.metrics["data"]["index_trained"] == 8 and version.metrics["data"]["index_mapped"] == 1

    index = runtime.paragraph_for(version)
    assert len(index.image_ids) == 13 and np.allclose(np.linalg.norm(index.vectors, axis=1), 1.0, atol=1e-5)
    assert sorted(np.bincount(index.source, minlength=3)) == sorted([8, 4, 1])
    assert {int(s) for s in index.source} == {SOURCE_TRAINED, SOURCE_INFERRED, SOURCE_MAPPED}
    # a training document's text, inferred, lands nearest its own trained vector
    documents = index.image_ids[index.source == SOURCE_TRAINED]
    for image_id in documents:
        texts = list(Caption.objects.filter(image_id=image_id).order_by("pk").values_list("text", flat=True))
        assert index.search(index.encode([" ".join(texts)])[0], documents, 1)[0][0] == image_id
    assert index.mapped_offset >= 0.0 and "hubness gap on dev" in run.log_tail


def test_a_second_run_is_compared_with_the_active_paragraph_version(paragraph_collection):
    first = _run(paragraph_collection).model_version
    promotion.model_version_promote(version=first, background=False, force=True)
    second = _run(paragraph_collection).model_version
    compared = second.metrics["compared_with"]
    assert compared["version"] == first.pk and "p2i_r1" in compared["dev"] and second.parent == first


def test_promoting_a_paragraph_version_only_flips_statuses_and_rolls_back(paragraph_collection):
    first = _run(paragraph_collection).model_version
    switch = promotion.model_version_promote(version=first, background=False, force=True)
    assert switch.status == ModelSwitch.Status.SUCCEEDED and switch.chunks_total == 0
    assert runtime.active_version("paragraph") == first
    second = _run(paragraph_collection).model_version
    promotion.model_version_promote(version=second, background=False, force=True)
    first.refresh_from_db()
    assert first.status == "retired" and runtime.active_version("paragraph") == second
    promotion.model_version_rollback(version=second, background=False)
    assert runtime.active_version("paragraph") == first
    assert not Caption.objects.filter(source=Caption.Source.GENERATED).exists()  # nothing was captioned


def test_cancel_before_the_first_pass_keeps_no_version(paragraph_collection):
    run = services.training_run_start(kind="paragraph", collections=[paragraph_collection],
                                      config_overrides=TINY_PARAGRAPH, enqueue=False)
    TrainingRun.objects.filter(pk=run.pk).update(cancel_requested=True, status="running", lease_token="x")
    from training.services import fitting
    from training.ml.config import TrainConfig

    outcome = fitting.fit(run_id=run.pk, collection_ids=[paragraph_collection.pk],
                          config=TrainConfig.from_dict(run.config), encoders=__import__(
                              "tests.training.fakes", fromlist=["FakeEncoders"]).FakeEncoders(),
                          device="cpu", on_event=lambda n, p: None, should_stop=lambda: True, log=lambda s: None)
    assert outcome.status == "cancelled" and outcome.files == {}


def test_bad_paragraph_config_is_a_400():
    from project.exceptions import ApplicationError
    from training.services.configs import train_config_build

    with pytest.raises(ApplicationError, match="mode"):
        train_config_build(kind="paragraph", overrides={"model": {"mode": "skipgram"}})


def test_admin_retrain_form_offers_the_paragraph_kind_and_starts_a_run(paragraph_collection):
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    url = reverse("admin:training_trainingrun_retrain")
    assert "Retrain paragraph vectors" in client.get(reverse("admin:training_trainingrun_changelist")).content.decode()
    html = client.get(url + "?kind=paragraph").content.decode()
    assert re.search(r'name="loop__epochs" value="40"', html) and 'name="model__mode"' in html
    form = {"kind": "paragraph", "collections": [paragraph_collection.pk], "loop__epochs": 3, "loop__lr": 0.025,
            "loop__seed": 0, "model__mode": "dbow", "model__vector_size": 8, "model__window": 3,
            "model__min_count": 1, "model__negative": 5, "model__map_ridge": 1.0, "task__held_out": 1}
    resp = client.post(url, form)
    run = TrainingRun.objects.get()
    assert resp.status_code == 302 and run.kind == "paragraph" and run.config["model"]["mode"] == "dbow"


def test_the_kind_defaults_to_pv_dbow_for_40_epochs_with_gensims_learning_rate():
    from training.services.configs import train_config_build

    config = train_config_build(kind="paragraph")
    assert config.model.mode == "dbow" and config.loop.lr == 0.025 and config.loop.epochs == 40


def test_manage_py_train_runs_the_paragraph_kind_and_promotes_it(paragraph_collection):
    import io
    import json

    from django.core.management import call_command

    out, err = io.StringIO(), io.StringIO()
    call_command("train", "--kind", "paragraph", "--collection", "paragraphs", "--set", "loop.epochs=5",
                 "--set", "model.min_count=1", "--set", "model.sample=0", "--set", "task.held_out=1", "--promote",
                 "--force", "--json", stdout=out, stderr=err)  # --force: 4 dev images are a tiny evaluation set
    result, _ = json.JSONDecoder().raw_decode(out.getvalue())  # the JSON, then the promotion line
    run = TrainingRun.objects.get(pk=result["run"])
    assert run.status == "succeeded" and run.kind == "paragraph" and run.step == run.total_steps == 5
    assert runtime.active_version("paragraph") == run.model_version
    assert "epoch 5: p2d_r1" in err.getvalue() and "loss=" not in err.getvalue()
