"""training.services in this process (fake encoders, tiny heads): start, execute, lease, cancel, reap."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from embeddings.models import Caption, ModelVersion
from project.exceptions import ApplicationError, Conflict
from tests.factories import CollectionFactory, UserFactory, make_image
from tests.training.conftest import TINY_CAPTIONER, TINY_EMBEDDING
from training import services
from training.models import TrainingRun
from training.services import fitting
from training.services.execution import lease_acquire

pytestmark = pytest.mark.django_db(transaction=True)


def start(collection, kind="embedding", config=TINY_EMBEDDING, **kw):
    return services.training_run_start(kind=kind, collections=[collection], config_overrides=config, user=None,
                                       enqueue=False, **kw)


def test_unknown_config_key_is_rejected_with_400(tiny_collection, fake_encoders):
    with pytest.raises(ApplicationError) as err:
        start(tiny_collection, config={"loop": {"epochz": 3}})
    assert err.value.status_code == 400 and "epochz" in err.value.message
    with pytest.raises(ApplicationError):
        start(tiny_collection, config=None, config_sets=["no_such_key=1"])
    assert not TrainingRun.objects.exists()


def test_default_batch_size_shrinks_to_a_small_collection_but_a_chosen_one_is_refused(tiny_collection,
                                                                                      fake_encoders):
    from training.datasets import split_counts

    n_train = split_counts([tiny_collection])["train"]
    assert 0 < n_train < 256  # the embedding default batch size
    # left out, or sent at its default value (the admin form sends every field): shrunk
    for default in ({"loop": {"epochs": 1}}, {"loop": {"epochs": 1, "batch_size": 256}}):
        run = start(tiny_collection, config=default)
        assert run.config["loop"]["batch_size"] == n_train
        run.delete()
    for chosen in ({"config": {"loop": {"epochs": 1, "batch_size": 300}}},
                   {"config": None, "config_sets": ["loop.batch_size=300"]},
                   {"config": ["batch_size = 300"]}):
        with pytest.raises(ApplicationError, match="lower the batch size") as err:
            start(tiny_collection, **chosen)
        assert err.value.status_code == 400
    assert not TrainingRun.objects.exists()


def test_collection_without_dev_images_is_rejected(fake_encoders):
    collection = CollectionFactory(owner=UserFactory(), name="nodev")
    for i in range(4):
        make_image(collection, seed=100 + i, caption="a dog", split="train")
    with pytest.raises(ApplicationError, match="no dev images"):
        start(collection)


def test_a_users_own_unsplit_collection_trains_with_a_hash_chosen_dev_split(fake_encoders, conse_v0):
    """Uploads have no split; the run divides them by content hash and trains and scores."""
    collection = CollectionFactory(owner=UserFactory(), name="mine")
    words = ["dog", "cat", "bird", "horse", "child", "car", "boat", "tree", "ball", "beach", "man", "woman"]
    for i, word in enumerate(words):
        make_image(collection, seed=500 + i, caption=f"a {word} outside")
    run = services.training_run_execute(start(collection).pk)
    assert run.status == "succeeded", run.log_tail[-2000:]
    data = run.model_version.metrics["data"]
    assert data["train_images"] + data["dev_images"] == 12 and data["dev_images"] >= 1


def test_second_run_of_a_kind_conflicts_but_the_other_kind_may_start(tiny_collection, fake_encoders):
    start(tiny_collection)
    with pytest.raises(Conflict) as err:
        start(tiny_collection)
    assert err.value.status_code == 409 and "already running" in err.value.message
    start(tiny_collection, kind="captioner", config=TINY_CAPTIONER)
    assert TrainingRun.objects.count() == 2


def test_successful_run_registers_a_candidate_and_leaves_the_active_model(tiny_collection, fake_encoders, settings):
    active_before = ModelVersion.objects.get(kind="embedding", status="active")
    run = services.training_run_execute(start(tiny_collection).pk)
    assert run.status == "succeeded" and run.attempts == 1 and run.lease_token == ""
    assert [h["epoch"] for h in run.history] == [1, 2, 3]
    assert all("contrastive_loss" in h["train"] and "rsum" in h["dev"] for h in run.history)
    assert run.step == run.total_steps == 18 and run.epoch == 3
    version = run.model_version
    assert version.status == "candidate" and version.parent == active_before and version.dim == 16
    assert version.metrics["dev"]["rsum"] > 0 and version.metrics["compared_with"]["version"] == active_before.pk
    assert set(version.files) == {p.name for p in (settings.MODEL_DIR / version.directory).iterdir()}
    assert version.encoders == {"image": "efficientnet-lite0|fake-image-encoder", "text": "fake-text-encoder"}
    assert ModelVersion.objects.get(kind="embedding", status="active") == active_before
    assert "registered candidate" in run.log_tail and "epoch 3" in run.log_tail


def test_candidate_checkpoint_loads_and_embeds(tiny_collection, fake_encoders, settings):
    import numpy as np

    from embeddings.ml.embedder import JointEmbedder
    from tests.training.fakes import fake_image_features, fake_text_vectors

    run = services.training_run_execute(start(tiny_collection).pk)
    embedder = JointEmbedder.from_checkpoint(settings.MODEL_DIR / run.model_version.directory, fake_text_vectors)
    vecs = embedder.encode_features(fake_image_features([1, 2]))
    assert vecs.shape == (2, 16) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)


def test_captioner_run_produces_a_loadable_captioner(tiny_collection, fake_encoders, settings):
    from embeddings.ml.caption_generator import load_captioner

    run = services.training_run_execute(start(tiny_collection, kind="captioner", config=TINY_CAPTIONER).pk)
    assert run.status == "succeeded", run.error
    assert "cider_d" in run.model_version.metrics["dev"]
    generator = load_captioner(settings.MODEL_DIR / run.model_version.directory)
    assert generator.config.decoder == "show_tell"


def test_execution_while_another_holds_a_live_lease_is_a_noop(tiny_collection, fake_encoders):
    run = start(tiny_collection)
    token = lease_acquire(run.pk)
    assert token is not None
    assert lease_acquire(run.pk) is None  # the duplicate delivery
    assert services.training_run_execute(run.pk) is None
    run.refresh_from_db()
    assert run.status == "running" and run.lease_token == token and run.attempts == 1 and run.history == []


def test_failed_run_keeps_error_and_log_tail(tiny_collection, fake_encoders):
    bad = {**TINY_EMBEDDING, "loop": {**TINY_EMBEDDING["loop"], "early_stop_metric": "no_such_metric"}}
    run = services.training_run_execute(start(tiny_collection, config=bad).pk)
    assert run.status == "failed" and "no_such_metric" in run.error
    assert "start:" in run.log_tail and "failed: KeyError" in run.log_tail
    assert run.model_version is None and run.finished_at is not None
    assert ModelVersion.objects.filter(status="candidate").count() == 0


def test_cancelling_a_queued_run_ends_it_at_once(tiny_collection, fake_encoders):
    run = services.training_run_cancel(run=start(tiny_collection))
    assert run.status == "cancelled"
    assert services.training_run_execute(run.pk) is None
    with pytest.raises(Conflict):
        services.training_run_cancel(run=run)
    start(tiny_collection)  # the kind is free again


def test_cancel_requested_mid_run_stops_at_the_next_step_and_keeps_the_checkpoint(tiny_collection, fake_encoders):
    run = start(tiny_collection, config={**TINY_EMBEDDING, "loop": {**TINY_EMBEDDING["loop"], "epochs": 50}})

    def on_progress(name, payload):
        if name == "epoch" and payload["epoch"] == 2:
            TrainingRun.objects.filter(pk=run.pk).update(cancel_requested=True)

    run = services.training_run_execute(run.pk, on_progress=on_progress)
    assert run.status == "cancelled" and run.model_version is None
    assert 2 <= run.epoch < 50
    assert (fitting.run_dir(run.pk) / "state" / "last.json").exists()
    assert "cancelled at epoch" in run.log_tail


def test_reaper_resubmits_a_dead_run_which_resumes_from_its_checkpoint(tiny_collection, fake_encoders, settings):
    run = start(tiny_collection, config={**TINY_EMBEDDING, "loop": {**TINY_EMBEDDING["loop"], "epochs": 4}})
    seen = []

    def die_after_epoch_2(name, payload):
        seen.append(name)
        if name == "checkpoint" and payload["epoch"] == 2:
            raise SystemExit("simulated worker death")  # not an Exception: nothing is recorded

    with pytest.raises(SystemExit):
        services.training_run_execute(run.pk, on_progress=die_after_epoch_2)
    run.refresh_from_db()
    assert run.status == "running" and run.lease_token
    assert services.training_runs_reap()["resubmitted"] == 0  # heartbeat still fresh
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=10))
    assert services.training_runs_reap()["resubmitted"] == 1
    run.refresh_from_db()
    assert run.status == "queued" and run.lease_token == "" and "resubmitted" in run.log_tail
    run = services.training_run_execute(run.pk)
    assert run.status == "succeeded" and run.attempts == 2
    assert "resumed after epoch 2" in run.log_tail
    assert [h["epoch"] for h in run.history] == [1, 2, 3, 4]


def test_reaper_gives_up_after_max_attempts(tiny_collection, fake_encoders, settings):
    settings.LOUPE_TRAINING_MAX_ATTEMPTS = 2
    run = start(tiny_collection)
    TrainingRun.objects.filter(pk=run.pk).update(status="running", attempts=2, lease_token="dead",
                                                 heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert services.training_runs_reap()["failed"] == 1
    run.refresh_from_db()
    assert run.status == "failed" and "Gave up after 2 attempts" in run.error


def test_frozen_dataset_ignores_captions_added_after_the_start(tiny_collection, fake_encoders):
    from training import datasets

    run = start(tiny_collection)
    first = datasets.snapshot([tiny_collection], fitting.run_dir(run.pk))
    image = tiny_collection.images.filter(split="train").first()
    Caption.objects.create(image=image, text="a brand new caption", source="human")
    again = datasets.snapshot([tiny_collection], fitting.run_dir(run.pk))
    assert again["train"].caption_ids == first["train"].caption_ids
    assert "a brand new caption" not in again["train"].texts


def test_generated_captions_never_train(tiny_collection, fake_encoders):
    from training import datasets

    image = tiny_collection.images.filter(split="train").first()
    Caption.objects.create(image=image, text="machine words", source="generated")
    split = datasets.build_split(datasets.split_query([tiny_collection], "train"))
    assert "machine words" not in split.texts and split.num_images == 8 and len(split.texts) == 16


def test_a_hogwild_adagrad_run_trains_and_records_its_optimiser_in_the_checkpoint(tiny_collection, fake_encoders,
                                                                                  settings):
    """Issue 17: the admin's config picks Adagrad and 2 Hogwild processes; the run succeeds on
    CPU processes and the choice is stored in the run row and in the checkpoint's config."""
    import json

    from training.ml.config import TrainConfig

    config = {**TINY_EMBEDDING, "loop": {**TINY_EMBEDDING["loop"], "optimizer": "adagrad", "lr": 0.05,
                                         "parallel": "hogwild", "workers": 2}}
    run = services.training_run_execute(start(tiny_collection, config=config).pk)
    assert run.status == "succeeded", run.error
    assert run.step == run.total_steps == 18 and [h["epoch"] for h in run.history] == [1, 2, 3]
    assert "hogwild: 2 CPU processes" in run.log_tail
    assert run.config["loop"]["optimizer"] == "adagrad" and run.config["loop"]["parallel"] == "hogwild"
    saved = json.loads((settings.MODEL_DIR / run.model_version.directory / "checkpoint.json").read_text())
    stored = TrainConfig.from_dict(saved["meta"]["train_config"])
    assert stored == TrainConfig.from_dict(run.config)
    assert (stored.loop.optimizer, stored.loop.parallel, stored.loop.workers) == ("adagrad", "hogwild", 2)
