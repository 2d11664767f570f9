"""The multi-GPU code path (torchrun, one rank per device), exercised on CPU with gloo by
forcing LOUPE_TRAINING_NPROC=2: the same path a host with several GPUs takes."""
from __future__ import annotations

import pytest

from tests.conftest import worker_env
from tests.training.conftest import TINY_EMBEDDING
from training import services

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_two_rank_run_reports_progress_and_registers_a_candidate(tiny_collection, fake_encoders, settings,
                                                                  monkeypatch):
    settings.LOUPE_TRAINING_NPROC = 2
    for key, value in worker_env(settings, DJANGO_SETTINGS_MODULE="tests.training.worker_settings").items():
        monkeypatch.setenv(key, value)
    run = services.training_run_start(kind="embedding", collections=[tiny_collection],
                                      config_overrides=TINY_EMBEDDING, user=None, enqueue=False)
    run = services.training_run_execute(run.pk)
    assert run.status == "succeeded", run.log_tail[-3000:]
    assert "launching torchrun with 2 processes" in run.log_tail and "(world size 2)" in run.log_tail
    assert [h["epoch"] for h in run.history] == [1, 2, 3]
    assert run.model_version.metrics["dev"]["rsum"] > 0 and run.model_version.files
