"""Fixtures for the training tests: a tiny captioned collection, fake encoders, tiny configs."""
from __future__ import annotations

import pytest

from embeddings.models import Caption
from tests.factories import CollectionFactory, UserFactory, make_image

WORDS = ["dog", "cat", "bird", "horse", "child", "man", "woman", "car", "boat", "tree", "ball", "beach"]

# A few seconds of work at most: 8 train images, batch 4 -> 6 steps per epoch.
TINY_EMBEDDING = {"loop": {"epochs": 3, "batch_size": 4, "warmup_steps": 0, "log_every_steps": 1, "patience": 0},
                  "model": {"family": "joint", "dim": 16, "hidden": 32, "attn_hidden": 8}}
TINY_CAPTIONER = {"loop": {"epochs": 2, "batch_size": 8, "warmup_steps": 0, "log_every_steps": 1, "patience": 0},
                  "model": {"decoder": "show_tell", "embed_dim": 16, "hidden_dim": 16, "context_dim": 16,
                            "attention_dim": 16, "max_len": 8},
                  "task": {"vocab_min_count": 1}}


@pytest.fixture
def fake_encoders(settings):
    settings.LOUPE_TRAINING_ENCODERS = "tests.training.fakes.FakeEncoders"
    settings.LOUPE_TRAINING_HEARTBEAT_S = 0.3
    settings.LOUPE_TRAINING_HEARTBEAT_TIMEOUT_S = 3.0
    settings.ML_DEVICE = "cpu"
    return settings


def make_captioned(collection, *, n_train: int = 8, n_dev: int = 4, seed0: int = 0) -> list:
    images = []
    for i in range(n_train + n_dev):
        a, b = WORDS[i % len(WORDS)], WORDS[(i * 5 + 3) % len(WORDS)]
        image = make_image(collection, seed=seed0 + i, caption=f"a {a} near a {b}",
                           split="train" if i < n_train else "dev")
        Caption.objects.create(image=image, text=f"the {b} and the {a} outside", source=Caption.Source.IMPORTED)
        images.append(image)
    return images


@pytest.fixture
def conse_v0(transactional_db):
    """ConSE v0 as created by embeddings/0002 (transactional tests flush migration data)."""
    from embeddings.models import ModelVersion

    version, _ = ModelVersion.objects.get_or_create(
        kind="embedding", family="conse", defaults={"name": "conse-v0", "status": "active", "dim": 384,
                                                     "config": {"k": 10, "temperature": 1.0}})
    return version


@pytest.fixture
def tiny_collection(conse_v0):
    collection = CollectionFactory(owner=UserFactory(), name="tiny")
    make_captioned(collection)
    return collection


@pytest.fixture
def start_worker(purge_broker, settings, fake_encoders):
    """Start real Celery worker processes (queues default + gpu) on this test's database and broker.

    `start(app="tests.training.worker_app")` also fakes the encoders inside the worker."""
    from project.celery import app
    from tests.conftest import WorkerProcess, worker_env

    app.conf.broker_url = settings.CELERY_BROKER_URL
    started: list = []

    def start(app: str = "project", **extra_env: str):
        env = worker_env(settings, DJANGO_SETTINGS_MODULE="tests.training.worker_settings", **extra_env)
        worker = WorkerProcess(env, queues="default,gpu,bulk")
        worker.args[worker.args.index("project")] = app
        worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


THEMES = [  # one per image: every document is different
    ("dog", "beach", "ball", "runs"), ("child", "snow", "sled", "slides"), ("man", "bike", "street", "rides"),
    ("cat", "sofa", "window", "sleeps"), ("surfer", "wave", "ocean", "paddles"), ("girl", "trampoline", "garden",
                                                                                  "jumps"),
    ("horse", "field", "fence", "gallops"), ("boy", "pool", "float", "swims"), ("woman", "market", "basket", "shops"),
    ("climber", "rock", "rope", "climbs"), ("bird", "lake", "reed", "flies"), ("skater", "park", "ramp", "skates"),
]
# 2 models x 100 passes over 8 tiny documents: about a second of gensim.
TINY_PARAGRAPH = {"loop": {"epochs": 100},
                  "model": {"mode": "both", "vector_size": 16, "min_count": 1, "sample": 0.0},
                  "task": {"held_out": 1}}


def _captions(i: int) -> list[str]:
    a, b, c, verb = THEMES[i % len(THEMES)]
    return [f"a {a} {verb} near the {b}", f"the {a} with a {c} on the {b}", f"one {a} {verb} by a {c}"]


@pytest.fixture
def paragraph_collection(transactional_db, fake_encoders):
    """12 images with 3 distinct captions each (8 train, 4 dev) and one without captions."""
    collection = CollectionFactory(owner=UserFactory(), name="paragraphs")
    for i in range(12):
        texts = _captions(i)
        image = make_image(collection, seed=i, caption=texts[0], split="train" if i < 8 else "dev")
        for text in texts[1:]:
            Caption.objects.create(image=image, text=text, source=Caption.Source.IMPORTED)
    make_image(collection, seed=100)  # no caption: reached through the image map only
    return collection
