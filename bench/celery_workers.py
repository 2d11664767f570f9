"""Solo-pool Celery worker processes for the benchmarks that drive the real queues
(bench/fanout.py, bench/ingest.py, bench/upload_searchable.py): started, waited for, stopped."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class SoloWorkers:
    """One `celery worker --pool=solo` per (name, queues) spec, each logging to
    `<log_dir>/worker-<name>.log`; ready when every log says "ready." (300 s at most)."""

    def __init__(self, specs: Sequence[tuple[str, str]], log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        for name, queues in specs:
            log = log_dir / f"worker-{name}.log"
            self.logs.append(log)
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "project", "worker", "-Q", queues, "-n",
                 f"{name}-{os.getpid()}@%h", "--pool=solo", "--loglevel=INFO"],
                cwd=REPO, env=dict(env if env is not None else os.environ), stdout=log.open("wb"),
                stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 300
        for proc, log in zip(self.procs, self.logs):
            while "ready." not in log.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"worker did not start:\n{log.read_text(errors='replace')[-3000:]}")
                time.sleep(0.3)

    def stop(self) -> None:
        """SIGTERM (warm shutdown) to each, then SIGKILL for any still running after 60 s."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
