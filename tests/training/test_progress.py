"""RunRecorder: what a run's row says matches what its log says, even though step events are
throttled. Issue 16: a finished run read "step 10/45" while its log said 18 steps."""
import pytest

from embeddings.models import ModelVersion
from training.models import TrainingRun
from training.services.progress import RunRecorder

pytestmark = pytest.mark.django_db


def _run_through(status: str) -> TrainingRun:
    run = TrainingRun.objects.create(kind=ModelVersion.Kind.EMBEDDING, status="running", lease_token="t")
    recorder = RunRecorder(run, "t", min_interval=3600)  # every throttled write after the first is held back
    recorder.on_event("start", {"epochs": 5, "num_batches": 9, "total_steps": 45, "device": "cpu"})
    for step in range(1, 19):
        recorder.on_event("step", {"epoch": 1 + (step - 1) // 9, "step": step, "losses": {"loss": 1.0},
                                   "lr": 0.1, "samples_per_s": 10.0})
    recorder.on_event("done", {"status": status, "best_epoch": 2, "best_metric": 1.0, "epochs": 2, "steps": 18,
                               "wall_s": 1.0})
    run.refresh_from_db()
    return run


def test_an_early_stopped_run_ends_with_the_steps_its_log_reports():
    run = _run_through("early_stop")
    assert "2 epochs, 18 steps" in run.log_tail
    assert (run.step, run.total_steps, run.epoch, run.total_epochs) == (18, 18, 2, 2)


def test_a_cancelled_run_keeps_its_planned_total():
    run = _run_through("cancelled")
    assert (run.step, run.total_steps, run.epoch, run.total_epochs) == (18, 45, 2, 5)
