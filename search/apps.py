from django.apps import AppConfig


class SearchConfig(AppConfig):
    name = "search"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # New vectors are added to the indexes, deleted images and captions removed.
        from celery import signals

        from search import receivers
        from search.services import warmup

        receivers.connect()
        # A Celery worker loads the active models when it starts (warm starts, docs/deploy.md).
        signals.worker_init.connect(warmup.on_worker_start, dispatch_uid="search.warm_up_worker", weak=False)
        signals.worker_process_init.connect(warmup.on_worker_start, dispatch_uid="search.warm_up_worker_child",
                                            weak=False)
