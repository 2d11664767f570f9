"""Admin pages: Retrain buttons and form, run page with the htmx-polled live fragment, actions."""
from __future__ import annotations

import json
import re

import pytest
from django.test import Client
from django.urls import reverse

from embeddings.models import ModelVersion
from tests.factories import UserFactory
from tests.training.conftest import TINY_EMBEDDING
from training import services
from training.models import ModelSwitch, TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin_client(transactional_db) -> Client:
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_changelists_offer_retrain_buttons(admin_client, conse_v0):
    for name in ("admin:training_trainingrun_changelist", "admin:embeddings_modelversion_changelist"):
        html = admin_client.get(reverse(name)).content.decode()
        assert "Retrain embedding" in html and "Retrain captioner" in html


def test_retrain_form_shows_defaults_and_starts_a_run(admin_client, tiny_collection, fake_encoders):
    url = reverse("admin:training_trainingrun_retrain")
    html = admin_client.get(url + "?kind=embedding").content.decode()
    assert re.search(r'name="loop__epochs" value="15"', html) and 'name="model__dim"' in html
    assert 'name="loop__early_stop_metric"' not in html
    assert '<option value="hogwild">' in html and '<option value="adagrad">' in html  # issue 17
    assert '<option value="efficientnet-lite2">' in html  # the image encoder is chosen per run
    cap = admin_client.get(url + "?kind=captioner").content.decode()
    # the captioner's default epochs: the shipped captioner's recipe (test_shipped pins it)
    assert 'name="model__decoder"' in cap and re.search(r'name="loop__epochs" value="10"', cap)
    form = {"kind": "embedding", "collections": [tiny_collection.pk], "loop__epochs": 2, "loop__batch_size": 4,
            "loop__lr": 0.001, "loop__weight_decay": 0.05, "loop__warmup_steps": 0, "loop__patience": 0,
            "loop__seed": 0, "model__dim": 400, "model__head": "linear", "model__dropout": 0.1,
            "model__image_input": "pooled", "task__loss": "info_nce",
            "loop__optimizer": "adagrad", "loop__parallel": "hogwild", "loop__workers": 2,  # issue 17
            "task__image_encoder": "efficientnet-lite2",
            "extra": "model.joint_dim=16\nmodel.gate_centroids=2\nmodel.hidden=32\n"}  # the default (prior) family
    resp = admin_client.post(url, form)
    run = TrainingRun.objects.get()
    assert resp.status_code == 302 and resp["Location"] == reverse("admin:training_trainingrun_change", args=[run.pk])
    assert run.config["loop"]["epochs"] == 2 and run.config["model"]["head"] == "linear"
    assert run.config["model"]["hidden"] == 32
    assert run.config["task"]["image_encoder"] == "efficientnet-lite2"
    assert (run.config["loop"]["optimizer"], run.config["loop"]["parallel"], run.config["loop"]["workers"]) == (
        "adagrad", "hogwild", 2)
    bad = admin_client.post(url, {**form, "extra": "model.nope=1"}, follow=True).content.decode()
    assert "nope" in bad  # error shown; the conflict or config error never creates a run
    assert TrainingRun.objects.count() == 1


def test_run_page_polls_a_live_fragment_with_progress_and_comparison(admin_client, tiny_collection, fake_encoders):
    run = services.training_run_start(kind="embedding", collections=[tiny_collection],
                                      config_overrides=TINY_EMBEDDING, user=None, enqueue=False)
    page = admin_client.get(reverse("admin:training_trainingrun_change", args=[run.pk])).content.decode()
    live = reverse("admin:training_trainingrun_live", args=[run.pk])
    assert f'hx-get="{live}"' in page and "vendor/chart.umd.min.js" in page and "js/training_run.js" in page
    assert "<script>" not in page.replace('<script type="application/json"', "")  # no inline script (CSP)
    assert "Cancel run" in page
    run = services.training_run_execute(run.pk)
    frag = admin_client.get(live).content.decode()
    assert "hx-trigger" not in frag  # finished: polling stops
    assert "<progress" in frag and 'value="100.0"' in frag and "this run vs the active version" in frag
    assert "conse-v0" in frag and f"Promote {run.model_version.name}" in frag
    series = json.loads(frag.split('id="run-series" type="application/json">')[1].split("</script>")[0])
    assert series["epochs"] == [1, 2, 3] and "contrastive_loss" in series["losses"] and "rsum" in series["dev"]


def test_cancel_button_and_version_actions(admin_client, tiny_collection, fake_encoders, conse_v0):
    run = services.training_run_start(kind="embedding", collections=[tiny_collection],
                                      config_overrides=TINY_EMBEDDING, user=None, enqueue=False)
    admin_client.post(reverse("admin:training_trainingrun_cancel", args=[run.pk]))
    assert TrainingRun.objects.get(pk=run.pk).status == "cancelled"
    run = services.training_run_start(kind="embedding", collections=[tiny_collection],
                                      config_overrides=TINY_EMBEDDING, user=None, enqueue=False)
    version = services.training_run_execute(run.pk).model_version
    page = admin_client.get(reverse("admin:embeddings_modelversion_change", args=[version.pk])).content.decode()
    assert "Promote" in page
    asked = admin_client.post(reverse("admin:embeddings_modelversion_promote", args=[version.pk]))
    assert asked.status_code == 200 and b"Promote anyway" in asked.content  # tiny dev set: confirm first
    assert not ModelSwitch.objects.exists()
    admin_client.post(reverse("admin:embeddings_modelversion_promote", args=[version.pk]), {"force": "1"})
    assert ModelSwitch.objects.get().version == version
    listing = admin_client.get(reverse("admin:embeddings_modelversion_changelist")).content.decode()
    assert "Recent promotions" in listing
    conse_page = admin_client.get(reverse("admin:embeddings_modelversion_change", args=[conse_v0.pk])).content
    assert b"Roll back" not in conse_page  # nothing before ConSE v0
    assert ModelVersion.objects.get(kind="embedding", status="active") == conse_v0


def test_version_list_shows_both_evaluation_sets_with_their_sizes(admin_client, conse_v0):
    """Issue 20: in-domain and out-of-domain figures beside each version, with each set's size:
    a trained version's run figures, and what `evaluate --record` stored (ConSE v0 here)."""
    ModelVersion.objects.create(
        kind="embedding", name="prior-a", family="joint", status="candidate", dim=896,
        metrics={"dev": {"t2i_r1": 24.2, "i2t_r1": 30.1, "ood_t2i_r1": 5.0, "ood_i2t_r1": 4.4},
                 "data": {"dev_images": 1000, "dev_captions": 5000, "ood_images": 680, "ood_captions": 680}})
    conse_v0.metrics = {"sets": {"in_domain": {"images": 1000, "captions": 5000,
                                               "metrics": {"t2i_r1": 6.1, "i2t_r1": 4.8}},
                                 "ood": {"images": 680, "captions": 680, "metrics": {"t2i_r1": 5.0, "i2t_r1": 4.3}}}}
    conse_v0.save()
    html = admin_client.get(reverse("admin:embeddings_modelversion_changelist")).content.decode()
    assert "In-domain dev" in html and "Out-of-domain dev" in html  # Django capitalises column titles
    assert "24.2 / 30.1 (1000 images, 5000 captions)" in html and "5.0 / 4.4 (680 images, 680 captions)" in html
    assert "6.1 / 4.8 (1000 images, 5000 captions)" in html and "5.0 / 4.3 (680 images, 680 captions)" in html
