"""Entry points: each process role pins its threads (project/threads.py), and `make run`'s
launcher (deploy/run.sh) serves with DEBUG off and stops everything on one SIGTERM."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update({"DJANGO_SETTINGS_MODULE": "project.settings", "LOUPE_VAR_DIR": str(tmp_path / "var"),
                "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2", **extra})  # the role's count must win
    return env


def _threads(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_threads_for_each_role_come_from_the_settings(settings):
    from project import threads

    settings.LOUPE_WEB_THREADS, settings.LOUPE_WORKER_THREADS, settings.LOUPE_COMMAND_THREADS = 1, 3, 0
    assert (threads.threads_for("web"), threads.threads_for("worker"), threads.threads_for("command")) == (1, 3, 3)
    settings.LOUPE_WORKER_THREADS, settings.LOUPE_WORKER_PROCESSES = 0, 64  # more processes than cores
    assert threads.threads_for("worker") == 1
    with pytest.raises(ValueError):
        threads.threads_for("gpu")


def test_the_wsgi_app_pins_web_threads_and_manage_py_pins_command_threads(tmp_path):
    probe = ("import torch, os; "
             "print(torch.get_num_threads(), os.environ['OMP_NUM_THREADS'], os.environ['LOUPE_PROCESS_ROLE'])")
    web = _threads(_env(tmp_path, LOUPE_WEB_THREADS="1"), "-c", f"import project.wsgi; {probe}")
    assert web == "1 1 web"
    command = _threads(_env(tmp_path, LOUPE_COMMAND_THREADS="2"), "manage.py", "shell", "-c", probe)
    assert command == "2 2 command"


def test_a_celery_worker_process_pins_worker_threads(tmp_path):
    probe = ("from celery import signals; import project.celery, torch, os; "
             "signals.worker_process_init.send(sender=None); "
             "print(torch.get_num_threads(), os.environ['LOUPE_PROCESS_ROLE'])")
    assert _threads(_env(tmp_path, LOUPE_WORKER_THREADS="2"), "-c",
                    f"import django; django.setup(); {probe}") == "2 worker"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.worker
@pytest.mark.slow
def test_make_run_serves_without_debug_and_one_sigterm_to_its_group_stops_everything_within_10_s(tmp_path):
    """With warm starts on, as `make run` has them: the SIGTERM usually lands while the processes
    are still loading models (their warm-up threads must not hold the stop back)."""
    env = _env(tmp_path, LOUPE_WARM_START="true")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True, timeout=300)
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--no-input", "-v0"], cwd=REPO, env=env,
                   check=True, timeout=300)
    port = _free_port()
    env.update(PY=sys.executable, HOST="127.0.0.1", PORT=str(port))
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(["bash", "deploy/run.sh"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as resp:
                    assert resp.status == 200
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()[-3000:]
                time.sleep(0.5)
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/no-such-page/", timeout=10)
        page = missing.value.read().decode()
        # ours, not Django's debug page
        assert missing.value.code == 404 and "Not found" in page and "Traceback" not in page
        with urllib.request.urlopen(f"{base}/static/css/loupe.css", timeout=10) as css:  # whitenoise
            assert css.status == 200
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
        while subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True).returncode == 0:
            assert time.monotonic() - started < 10, "processes of make run still alive after 10 s"
            time.sleep(0.1)
        assert time.monotonic() - started < 10
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{base}/healthz", timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_the_wsgi_app_starts_warm_up_and_a_worker_process_does_too(tmp_path):
    """Issue 15, item 5: with LOUPE_WARM_START on, loading the WSGI app (gunicorn's workers) and
    a Celery worker process start warm-up; off (as here in tests), neither does."""
    probe = ("import time; from search.services import warmup; "
             "[time.sleep(0.05) for _ in range(200) if warmup.state()['status'] == 'warming']; "
             "print(warmup.state()['status'])")
    on = _env(tmp_path, LOUPE_WARM_START="true")
    assert _threads(on, "-c", f"import project.wsgi; {probe}") == "ready"
    assert _threads(_env(tmp_path, LOUPE_WARM_START="false"), "-c", f"import project.wsgi; {probe}") == "cold"
    worker = ("from celery import signals; import project.celery; "
              "signals.worker_process_init.send(sender=None); ")
    assert _threads(on, "-c", f"import django; django.setup(); {worker}{probe}") == "ready"
