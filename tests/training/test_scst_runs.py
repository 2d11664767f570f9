"""A captioner run with a self-critical phase through the product path (training.services): its
settings in the run's config, its own phase and reward curves in the row, the admin page and the API."""
from __future__ import annotations

import json
import re

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from tests.factories import UserFactory
from tests.training.conftest import TINY_CAPTIONER
from training import selectors, services

pytestmark = pytest.mark.django_db(transaction=True)

SCST = {**TINY_CAPTIONER, "task": {**TINY_CAPTIONER["task"], "scst_epochs": 2, "scst_lr": 1e-3, "scst_samples": 3,
                                  "scst_max_len": 8, "scst_baseline": "mean"}}


def _run(collection, config):
    run = services.training_run_start(kind="captioner", collections=[collection], config_overrides=config, user=None,
                                      enqueue=False)
    return services.training_run_execute(run.pk)


def test_a_self_critical_phase_is_recorded_like_the_epochs(tiny_collection, fake_encoders):
    run = _run(tiny_collection, SCST)
    assert run.status == "succeeded", run.error
    assert {k: run.config["task"][k] for k in ("scst_epochs", "scst_lr", "scst_samples", "scst_baseline")} == {
        "scst_epochs": 2, "scst_lr": 1e-3, "scst_samples": 3, "scst_baseline": "mean"}
    assert run.model_version.config["task"]["scst_epochs"] == 2  # the version carries its recipe
    assert run.total_epochs == 4 and run.epoch == 4
    assert [h["phase"] for h in run.history] == ["xe", "xe", "scst", "scst"]
    assert all("scst_reward" in h["train"] and "scst_baseline" in h["train"] for h in run.history[2:])
    assert "phase scst: up to 2 epochs from epoch 3" in run.log_tail
    assert re.search(r"epoch 3 scst: train loss -?\d+\.\d+ \(reward baseline \d\.\d+, reward \d\.\d+\)", run.log_tail)
    series = selectors.chart_series(run)
    assert series["phases"] == ["xe", "xe", "scst", "scst"]
    assert series["rewards"]["scst_reward"][:2] == [None, None] and None not in series["rewards"]["scst_reward"][2:]
    assert "scst_loss" in series["losses"] and "caption_loss" in series["losses"]

    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    page = client.get(reverse("admin:training_trainingrun_change", args=[run.pk])).content.decode()
    assert 'id="chart-reward"' in page and re.search(r'<figure id="figure-reward"\s*>', page)  # shown, not hidden
    frag = client.get(reverse("admin:training_trainingrun_live", args=[run.pk])).content.decode()
    data = json.loads(frag.split('id="run-series" type="application/json">')[1].split("</script>")[0])
    assert data["rewards"]["scst_baseline"][2:] == [h["train"]["scst_baseline"] for h in run.history[2:]]
    api = APIClient()
    api.force_authenticate(UserFactory(is_staff=True))
    progress = api.get(f"/api/v1/training-runs/{run.pk}/").json()["progress"]
    assert progress["train_phase"] == "scst"
    assert [h["phase"] for h in progress["history"]] == ["xe", "xe", "scst", "scst"]


def test_a_run_without_scst_epochs_has_no_reward_chart(tiny_collection, fake_encoders):
    run = _run(tiny_collection, TINY_CAPTIONER)
    assert run.status == "succeeded", run.error
    assert run.config["task"]["scst_epochs"] == 0 and [h["phase"] for h in run.history] == ["xe", "xe"]
    assert "phase scst" not in run.log_tail and selectors.chart_series(run)["rewards"] == {}
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    page = client.get(reverse("admin:training_trainingrun_change", args=[run.pk])).content.decode()
    assert re.search(r'<figure id="figure-reward"\s+hidden', page)


def test_the_retrain_form_offers_the_self_critical_settings(tiny_collection, fake_encoders):
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    html = client.get(reverse("admin:training_trainingrun_retrain") + "?kind=captioner").content.decode()
    assert re.search(r'name="task__scst_epochs" value="0"', html) and 'name="task__scst_lr"' in html
    assert '<option value="mean">' in html and 'name="task__scst_samples"' in html


def test_a_run_can_start_from_an_existing_captioner(tiny_collection, fake_encoders, settings):
    """task.init_version: the fine-tuning run starts from that version's weights and vocabulary
    (with a vanishing lr its model is still that version's); another architecture is refused."""
    from embeddings.ml.caption_generator import DecodingConfig, load_captioner, save_captioner

    first = _run(tiny_collection, TINY_CAPTIONER)
    assert first.status == "succeeded", first.error
    path = settings.MODEL_DIR / first.model_version.directory
    made = load_captioner(path)  # give it decoding settings of its own, as ship_model --decoding does
    save_captioner(path, made.decoder, made.vocab, decoding=DecodingConfig(beam_size=2, length_penalty=0.5))
    still = {**TINY_CAPTIONER, "loop": {**TINY_CAPTIONER["loop"], "epochs": 1, "lr": 1e-12},
             "task": {**TINY_CAPTIONER["task"], "vocab_min_count": 50, "init_version": first.model_version.pk}}
    tuned = _run(tiny_collection, still)
    assert tuned.status == "succeeded", tuned.error
    a = load_captioner(settings.MODEL_DIR / first.model_version.directory)
    b = load_captioner(settings.MODEL_DIR / tuned.model_version.directory)
    assert a.vocab.to_dict() == b.vocab.to_dict()  # min count 50 would have left a tiny vocabulary
    assert b.decoding == a.decoding == DecodingConfig(beam_size=2, length_penalty=0.5)  # kept from the start
    for name, value in a.decoder.state_dict().items():
        assert (value - b.decoder.state_dict()[name]).abs().max() < 1e-6, name
    wider = {**still, "model": {**TINY_CAPTIONER["model"], "hidden_dim": 24}}
    refused = _run(tiny_collection, wider)
    assert refused.status == "failed" and "hidden_dim" in refused.error and "init_version" in refused.error
    missing = _run(tiny_collection, {**still, "task": {**still["task"], "init_version": 999_999}})
    assert missing.status == "failed" and "no captioner model version" in missing.error
    other = _run(tiny_collection, {**still, "task": {**still["task"], "image_encoder": "efficientnet-lite2"}})
    assert other.status == "failed" and "set task.image_encoder to match" in other.error  # Lite0 weights
