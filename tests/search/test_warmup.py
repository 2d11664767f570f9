"""Warm starts (issue 15, item 5): a process loads its models and indexes at start, and /readyz
answers 503 "warming" until it has."""
from __future__ import annotations

import threading

import pytest

from embeddings import encoding, runtime
from project import observability
from search import registry
from search.services import index_rebuild, warmup
from tests.search.conftest import colour_jpeg, ingest

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _cold():
    warmup.reset()
    yield
    warmup.reset()


@pytest.fixture
def indexed(fake_version, collection):
    image = ingest(collection, colour_jpeg((250, 10, 10)), caption="a red car")
    encoding.images_encode(image_ids=[image.pk], version=fake_version)
    for m in ("image", "caption"):
        index_rebuild(version=fake_version, modality=m)
    registry.reset()  # as a fresh process: nothing served yet
    return image


def test_warm_up_loads_the_indexes_text_path_labels_captioner_and_image_encoder(indexed, fake_version, fake_captioner,
                                                                              monkeypatch):
    loaded = []
    monkeypatch.setattr(runtime, "conse_class_vectors", lambda: loaded.append("conse"))
    assert registry.served(fake_version.pk, "image")[0] is None
    state = warmup.warm_up("web")
    assert state["status"] == "ready"
    assert set(state["steps"]) == {"text query", "indexes", "conse class vectors", "image encoder", "captioner"}
    assert all(v.startswith("ok") for v in state["steps"].values()), state["steps"]
    assert registry.served(fake_version.pk, "image")[0] is not None
    assert registry.served(fake_version.pk, "caption")[0] is not None
    assert loaded == ["conse"] and fake_captioner.generator.beam_sizes == [None]


def test_a_worker_warms_what_tasks_use_and_not_the_indexes(indexed, fake_version, fake_captioner):
    state = warmup.warm_up("worker")
    assert list(state["steps"]) == ["caption text", "image encoder", "captioner"]
    assert registry.served(fake_version.pk, "image")[0] is None


def test_a_failing_step_is_skipped_and_the_rest_still_load(indexed, fake_version, monkeypatch):
    monkeypatch.setattr(runtime, "conse_class_vectors", lambda: 1 / 0)
    state = warmup.warm_up("web")  # no captioner is active either
    assert state["status"] == "ready"
    assert state["steps"]["conse class vectors"].startswith("skipped: ZeroDivisionError")
    assert state["steps"]["captioner"].startswith("skipped: ModelUnavailable")
    assert state["steps"]["indexes"].startswith("ok")


def test_readyz_says_warming_until_warm_up_ends(client, monkeypatch, indexed):
    release, entered = threading.Event(), threading.Event()

    def slow() -> None:
        entered.set()
        release.wait(10)

    monkeypatch.setattr(warmup, "steps", lambda role: [("slow model", slow)])
    monkeypatch.setattr(observability, "CHECKS", {"warm": observability.CHECKS["warm"]})
    thread = warmup.warm_up_in_background("web")
    assert entered.wait(10)
    resp = client.get("/readyz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "warming" and body["checks"]["warm"].startswith("warming")
    release.set()
    thread.join(10)
    resp = client.get("/readyz")
    assert resp.status_code == 200 and resp.json()["warm_up"]["steps"]["slow model"].startswith("ok")


def test_a_process_that_never_warms_is_not_held_back(client, monkeypatch):
    monkeypatch.setattr(observability, "CHECKS", {"warm": observability.CHECKS["warm"]})
    assert warmup.state()["status"] == "cold"
    assert client.get("/readyz").status_code == 200


def test_under_gunicorn_readyz_waits_for_every_worker_of_the_group(settings, tmp_path, monkeypatch):
    """A worker that finished warming still answers "warming" while a live sibling is cold; a
    dead sibling's stale file does not count."""
    import json
    import os
    import subprocess
    import sys

    settings.VAR_DIR = tmp_path
    monkeypatch.setenv("LOUPE_WARM_GROUP", "4242")
    monkeypatch.setenv("LOUPE_WARM_EXPECTED", "2")
    monkeypatch.setattr(warmup, "steps", lambda role: [])
    warmup.warm_up("web")
    folder = tmp_path / "run" / "warm" / "4242"
    assert json.loads((folder / str(os.getpid())).read_text())["status"] == "ready"
    assert warmup.group_status() == "warming"  # only one of two workers has reported
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (folder / str(sibling.pid)).write_text(json.dumps({"status": "warming"}))
        assert warmup.group_status() == "warming"
        (folder / str(sibling.pid)).write_text(json.dumps({"status": "ready"}))
        assert warmup.group_status() == "ready"
    finally:
        sibling.kill()
        sibling.wait()
    assert warmup.group_status() == "warming"  # the sibling died: its file no longer counts
