"""Health, readiness and Prometheus metrics.

* `/healthz`: the process answers (no dependency checked).
* `/readyz`: database, broker, an active embedding model, and its indexes as search would
  serve them in this process (the same lookup: a file that does not load, or a rebuild still
  running, is "not ready" with the reason); 503 otherwise.
* `/metrics`: Prometheus text format. Request-path metrics (search latency) are recorded in this
  process; state metrics (images by status, index size and recall, queue depth, training
  progress, task outcomes) are read from the database and the broker at scrape time, so they
  are right whichever process did the work. The counts cover private collections too, so the
  page needs METRICS_TOKEN as a bearer token, or, with no token set, a client on this machine
  (project/client_ip.py: a forwarded header cannot fake one).
"""
from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterator

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from project.client_ip import is_local

logger = logging.getLogger(__name__)

SEARCH_LATENCY = Histogram(
    "loupe_search_seconds", "Search service latency by query mode", ["mode"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


def queue_depths() -> dict[str, int]:
    """Messages waiting per queue (Redis lists, or files of the file-system broker)."""
    from project.celery import app

    depths: dict[str, int] = {}
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        for queue in ("default", "gpu"):
            try:
                depths[queue] = conn.default_channel.queue_declare(queue=queue, passive=True).message_count
            except Exception as exc:  # a queue nobody declared yet has no depth to report
                logger.debug("queue %s: %s", queue, exc)
                depths[queue] = 0
    return depths


class StateCollector(Collector):
    def describe(self) -> list:
        # Without describe(), registering would call collect(), i.e. query the database at
        # import time (before migrations, in `manage.py migrate` itself).
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from django.db.models import Count

        from embeddings.models import Image
        from search.models import SearchIndex
        from training.models import TrainingRun

        images = GaugeMetricFamily("loupe_images", "Images by processing status", labels=["status"])
        for row in Image.objects.values("status").annotate(n=Count("id")):
            images.add_metric([row["status"]], row["n"])
        yield images
        size = GaugeMetricFamily("loupe_index_vectors", "Vectors in each index", labels=["model_version", "modality"])
        recall = GaugeMetricFamily("loupe_index_recall_at_10", "Measured recall@10 vs exact",
                                   labels=["model_version", "modality"])
        for idx in SearchIndex.objects.filter(status="ready"):
            labels = [str(idx.model_version_id), idx.modality]
            size.add_metric(labels, idx.count)
            if idx.recall_at_10 is not None:
                recall.add_metric(labels, idx.recall_at_10)
        yield size
        yield recall
        runs = GaugeMetricFamily("loupe_training_runs", "Training runs by status (task outcomes)",
                                 labels=["kind", "status"])
        for row in TrainingRun.objects.values("kind", "status").annotate(n=Count("id")):
            runs.add_metric([row["kind"], row["status"]], row["n"])
        yield runs
        progress = GaugeMetricFamily("loupe_training_progress", "Fraction of steps done of running runs",
                                     labels=["run", "kind"])
        for run in TrainingRun.objects.filter(status="running"):
            progress.add_metric([str(run.pk), run.kind], run.step / run.total_steps if run.total_steps else 0.0)
        yield progress
        depth = GaugeMetricFamily("loupe_queue_depth", "Messages waiting in each Celery queue", labels=["queue"])
        try:
            for queue, n in queue_depths().items():
                depth.add_metric([queue], n)
        except Exception as exc:  # broker down: the metric is absent, readyz says why
            logger.warning("queue depth unavailable: %s", exc)
        yield depth


_collector = StateCollector()
REGISTRY.register(_collector)


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_broker() -> None:
    from project.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


def _check_model() -> None:
    from embeddings.models import ModelVersion

    if not ModelVersion.objects.filter(kind="embedding", status="active").exists():
        raise RuntimeError("no active embedding model")


def _check_index() -> None:
    """The active model's indexes load here as a search would load them (search answers 503
    "index rebuilding" exactly when this fails), and no first build is still running."""
    from embeddings.models import ModelVersion
    from search import registry, selectors
    from search.models import SearchIndex
    from search.services import IndexRebuilding, index_for_search

    version = ModelVersion.objects.filter(kind="embedding", status="active").first()
    if version is None:
        raise RuntimeError("no active embedding model")
    record = SearchIndex.objects.filter(model_version=version, modality="image").first()
    if record is None or record.status != SearchIndex.Status.READY:
        state = "none" if record is None else f"{record.status} {record.error}".strip()
        raise RuntimeError(f"no ready image index for the active model (version {version.pk}: {state})")
    for modality in (SearchIndex.Modality.IMAGE, SearchIndex.Modality.CAPTION):
        try:
            index_for_search(version=version, modality=modality)  # may enqueue the rebuild, as a search does
        except IndexRebuilding as exc:
            found = registry.lookup(version.pk, modality, selectors.version_dim(version))  # remembered, no reload
            why = f"{found.problem}: {found.detail}" if found.problem else str(exc)
            raise RuntimeError(f"{modality} index of version {version.pk} cannot be served ({why}); "
                               "search answers 503 until it is rebuilt") from exc


def _check_warm() -> None:
    """This process has finished loading its models and indexes (LOUPE_WARM_START)."""
    from search.services import warmup

    if warmup.group_status() == "warming":  # this process, or (gunicorn) a sibling worker
        raise Warming("models and indexes are loading")


class Warming(RuntimeError):
    """The process is warming up: not ready yet, but nothing is wrong."""


CHECKS = {"database": _check_database, "broker": _check_broker, "model": _check_model, "index": _check_index,
          "warm": _check_warm}


def readyz(request: HttpRequest) -> JsonResponse:
    results: dict[str, str] = {}
    for name, check in CHECKS.items():
        started = time.monotonic()
        try:
            check()
            results[name] = "ok"
        except Warming as exc:
            results[name] = f"warming: {exc}"
        except Exception as exc:  # each failed dependency is reported, not raised
            results[name] = f"error: {exc}"
        logger.debug("readyz %s took %.3fs", name, time.monotonic() - started)
    ready = all(v == "ok" for v in results.values())
    warming = not ready and all(v == "ok" or v.startswith("warming") for v in results.values())
    body: dict[str, object] = {"status": "ready" if ready else "warming" if warming else "not ready",
                               "checks": results}
    if "warm" in CHECKS:
        from search.services import warmup

        body["warm_up"] = warmup.state()
    return JsonResponse(body, status=200 if ready else 503)


def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, f"Bearer {token}".encode()):
            return HttpResponse("metrics need a bearer token", status=401, content_type="text/plain")
    elif not is_local(request):
        return HttpResponse("metrics answer only this machine unless METRICS_TOKEN is set",
                            status=403, content_type="text/plain")
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
