"""A malicious checkpoint handed to the Django-side loaders (issue 7, case 23).

A pickle whose `__reduce__` creates a marker file is placed where a model version's checkpoint
should be, under every name a careless loader might open. runtime.embedder_for / captioner_for
must refuse it without unpickling, the API must answer 503 (not 500), and the marker must never
appear. The pure loader is covered by tests/embeddings/ml/test_checkpoint.py.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import re
from pathlib import Path

import pytest

from embeddings import runtime
from embeddings.ml.checkpoint import CheckpointError
from embeddings.models import ModelVersion
from tests.conftest import REPO

pytestmark = pytest.mark.django_db


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(directory: Path, marker: Path, kind: str) -> None:
    """Pickles under every plausible name, and a manifest whose weights (checksum and size
    matching) are a pickle too."""
    payload = pickle.dumps({"state_dict": _Evil(str(marker))})
    directory.mkdir(parents=True)
    for name in ("model.pt", "pytorch_model.bin", "checkpoint.pt", "model.safetensors", "weights.pkl"):
        (directory / name).write_bytes(payload)
    (directory / "evil.safetensors").write_bytes(payload)
    manifest = {"format": "loupe-checkpoint", "format_version": 1, "config": {}, "meta": {"kind": kind},
                "weights_file": "evil.safetensors", "weights_bytes": len(payload),
                "weights_sha256": hashlib.sha256(payload).hexdigest(), "tensors": {}}
    (directory / "checkpoint.json").write_text(json.dumps(manifest))


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "the malicious pickle was executed"


@pytest.fixture(autouse=True)
def _fresh_models():
    runtime.reset()
    yield
    runtime.reset()


def _version(kind: str, family: str, directory: str, active: bool = False) -> ModelVersion:
    if active:
        ModelVersion.objects.filter(kind=kind, status="active").update(status="retired")
    return ModelVersion.objects.create(kind=kind, name=f"evil-{kind}", family=family, directory=directory,
                                       status="active" if active else "candidate", dim=16)


def test_embedder_for_refuses_a_pickled_checkpoint_without_running_it(settings, marker):
    _plant(Path(settings.MODEL_DIR) / "evil-embedding", marker, "embedding")
    version = _version("embedding", "joint", "evil-embedding")
    with pytest.raises((CheckpointError, runtime.ModelUnavailable)):
        runtime.embedder_for(version)
    version.directory = "evil-embedding/model.pt"  # pointed straight at the pickle
    version.save()
    runtime.reset()
    with pytest.raises((CheckpointError, runtime.ModelUnavailable)):
        runtime.embedder_for(version)


def test_captioner_for_refuses_a_pickled_checkpoint_without_running_it(settings, marker):
    _plant(Path(settings.MODEL_DIR) / "evil-captioner", marker, "captioner")
    version = _version("captioner", "captioner", "evil-captioner")
    with pytest.raises((CheckpointError, runtime.ModelUnavailable)):
        runtime.captioner_for(version)


def test_an_active_malicious_model_makes_the_api_answer_503_never_500(settings, marker, api, collection):
    from tests.factories import make_image

    image = make_image(collection, seed=1)
    _plant(Path(settings.MODEL_DIR) / "evil-embedding", marker, "embedding")
    _plant(Path(settings.MODEL_DIR) / "evil-captioner", marker, "captioner")
    _version("embedding", "joint", "evil-embedding", active=True)
    _version("captioner", "captioner", "evil-captioner", active=True)
    # Search never loads the model when nothing is indexed for the active version (an empty page);
    # whenever it would have to, it answers 503. Never a 500, never the marker.
    search = api.get("/api/v1/search/", {"q": "a dog"})
    assert search.status_code in (200, 503), search.content
    if search.status_code == 200:
        assert search.json()["results"] == []
    # These always load the model: the embedder (explain) and the captioner.
    for resp in (api.get(f"/api/v1/images/{image.pk}/explain/", {"q": "a dog"}),
                 api.post("/api/v1/captions/", {"image_id": image.pk}, format="json")):
        assert resp.status_code == 503, resp.content
        assert resp.json()["error"]["code"] == "model_unavailable"
    assert not marker.exists()


def test_no_application_code_unpickles_model_files():
    """Static guard: outside tests, nothing calls pickle/torch.load or numpy with allow_pickle."""
    risky = re.compile(r"\b(pickle\.loads?|torch\.load|joblib\.load|dill\.load|allow_pickle\s*=\s*True)\b")
    offenders = []
    for path in REPO.glob("**/*.py"):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith((".venv/", "tests/", "var/")):
            continue
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if risky.search(line) and not line.lstrip().startswith("#"):
                offenders.append(f"{rel}:{lineno}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
