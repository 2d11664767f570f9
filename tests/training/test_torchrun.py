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


def test_a_failing_rank_is_reported_by_its_exception_not_torchruns_banner():
    from training.services.execution import _root_cause

    summary = """[rank0]: FileNotFoundError: gone
============================================================
training.ddp_entry FAILED
------------------------------------------------------------
Failures:
[1]:
  rank      : 1 (local_rank: 1)
  exitcode  : -15 (pid: 7486)  (SIGTERM)
  traceback : Signal 15 (SIGTERM) received by PID 7486
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 7485)
  traceback : Traceback (most recent call last):
    File "/work/main/training/datasets.py", line 99, in snapshot
      os.replace(part, path)
  FileNotFoundError: [Errno 2] No such file or directory: 'dataset.json.part'

============================================================
"""
    assert _root_cause(summary) == "FileNotFoundError: [Errno 2] No such file or directory: 'dataset.json.part'"
    assert _root_cause("plain failure\n\n") == "plain failure"
    assert _root_cause("") == ""
