"""Celery app for test worker processes: the project's app with the encoders faked.

`celery -A tests.training.worker_app worker ...` runs the real tasks, but embeddings.runtime
and embeddings.encoding go through tests/training/fakes.py, so a promotion's chunk tasks
run in seconds instead of loading EfficientNet and MiniLM.
"""
import os
import time

from celery import signals

from project.celery import app  # noqa: F401  (the app celery -A finds here)


@signals.worker_init.connect
def _install_fakes(**kwargs) -> None:
    import django

    django.setup()
    from tests.training.fakes import install_fake_runtime

    install_fake_runtime(setattr)
    pause = float(os.environ.get("LOUPE_TEST_EPOCH_PAUSE", "0") or 0)
    if pause:  # pace runs so a browser polling every 2 s sees their curves grow, however fast the machine
        from training.services.progress import RunRecorder

        record = RunRecorder.on_event

        def paced(self, name: str, payload: dict) -> None:
            record(self, name, payload)
            if name == "epoch":
                time.sleep(pause)

        RunRecorder.on_event = paced
