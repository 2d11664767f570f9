"""Celery tasks of the training app: thin, take ids, call one service. All run on the `gpu`
queue (settings.CELERY_TASK_ROUTES), in a worker started with --pool=solo (CUDA does not
survive fork). acks_late: a task whose worker died is delivered again; the services make a
second delivery harmless (a training run's database lease, upserted vectors per chunk)."""
from __future__ import annotations

from celery import shared_task

from training import services
from training.services import promotion

_GPU = {"acks_late": True, "reject_on_worker_lost": True}  # queue: CELERY_TASK_ROUTES -> gpu


@shared_task(name="training.tasks.run_training", **_GPU)
def run_training(run_id: int) -> str:
    """Run or resume a training run (a no-op while another worker holds its lease)."""
    run = services.training_run_execute(run_id)
    return run.status if run is not None else "skipped"


@shared_task(name="training.tasks.reap_runs")  # beat sends it to the default queue
def reap_runs() -> dict[str, int]:
    """Periodic (beat): resubmit runs whose heartbeat stopped; resume stalled promotions."""
    stats = services.training_runs_reap()
    stats["switches_resumed"] = promotion.switches_resume()
    return stats


@shared_task(name="training.tasks.switch_start", **_GPU)
def switch_start(switch_id: int) -> str:
    return promotion.switch_start(switch_id=switch_id).status


@shared_task(name="training.tasks.switch_encode_chunk", **_GPU)
def switch_encode_chunk(switch_id: int, image_ids: list[int]) -> int:
    return promotion.switch_encode_chunk(switch_id=switch_id, image_ids=image_ids)


@shared_task(name="training.tasks.switch_finish", **_GPU)
def switch_finish(switch_id: int) -> str:
    return promotion.switch_finish(switch_id=switch_id).status


@shared_task(name="training.tasks.switch_catch_up", **_GPU)
def switch_catch_up(switch_id: int) -> int:
    return promotion.switch_catch_up(switch_id=switch_id)


@shared_task(name="training.tasks.switch_caption_chunk", **_GPU)
def switch_caption_chunk(switch_id: int, image_ids: list[int]) -> int:
    return promotion.switch_caption_chunk(switch_id=switch_id, image_ids=image_ids)
