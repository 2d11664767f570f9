"""gunicorn settings for `make run` and deployments (`gunicorn -c project/gunicorn.conf.py`).

gthread workers: the request threads of one process share its query encoder, whose
micro-batcher encodes concurrent queries together (docs/deploy.md, "Web workers"). Each process
uses LOUPE_WEB_THREADS torch threads (project/wsgi.py pins them when the app loads).
A SIGTERM lets requests in flight finish for up to `graceful_timeout` seconds.
"""
import os

wsgi_app = "project.wsgi:application"
bind = os.environ.get("LOUPE_BIND", "127.0.0.1:8000")
worker_class = "gthread"
workers = int(os.environ.get("LOUPE_WEB_WORKERS", "2"))
threads = int(os.environ.get("LOUPE_WEB_REQUEST_THREADS", "4"))
timeout = 120
graceful_timeout = 5
accesslog = "-"
errorlog = "-"


def on_starting(server) -> None:
    """Every worker this master forks reports its warm-up under the master's pid, so /readyz in
    any of them answers 200 only when all of them are warm (search/services/warmup.py)."""
    os.environ["LOUPE_WARM_GROUP"] = str(os.getpid())
    os.environ["LOUPE_WARM_EXPECTED"] = str(workers)
