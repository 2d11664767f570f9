"""One rank of a multi-GPU training run, started by torchrun from the run's Celery task.

    python -m torch.distributed.run --standalone --nproc-per-node=N -m training.ddp_entry RUN_ID TOKEN

Every rank builds the same task from the run's frozen dataset; rank 0 reports progress under
the parent's lease token and writes the model files and `result.json`, which the parent
(still holding the lease and heartbeating) turns into a ModelVersion.
"""
from __future__ import annotations

import json
import os
import sys

from torch.distributed.elastic.multiprocessing.errors import record


@record  # a failing rank's traceback goes to torchrun's error file and its failure summary
def main(argv: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    import torch.distributed as dist

    from embeddings.ml.atomic import atomic_write_text
    from training.encoders import get_encoders
    from training.ml.config import TrainConfig, image_encoder_of
    from training.ml.distributed import init_distributed, train_distributed
    from training.models import TrainingRun
    from training.services import fitting
    from training.services.execution import should_stop_poller
    from training.services.progress import RunRecorder

    run_id, token = int(argv[0]), argv[1]
    rank, world, device = init_distributed()
    run = TrainingRun.objects.get(pk=run_id)
    config = TrainConfig.from_dict(run.config)
    recorder = RunRecorder(run, token)
    outcome = fitting.fit(
        run_id=run_id, collection_ids=list(run.collections.values_list("pk", flat=True)),
        config=config, encoders=get_encoders(image_encoder_of(config)), device=str(device),
        on_event=recorder.on_event if rank == 0 else (lambda name, payload: None),
        should_stop=should_stop_poller(run_id), log=recorder.log if rank == 0 else (lambda text: None),
        trainer=train_distributed, write_files=rank == 0)
    if rank == 0:
        atomic_write_text(fitting.run_dir(run_id) / "result.json", json.dumps(outcome.as_dict()))
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
