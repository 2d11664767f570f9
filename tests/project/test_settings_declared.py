"""Every setting the product reads is declared in project/settings.py (through django-environ),
so docs/deploy.md can list them and a typo is an AttributeError, not a silent default."""
from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ["embeddings", "search", "training", "project"]


def _product_files():
    for package in PRODUCT:
        for path in (REPO / package).rglob("*.py"):
            if "migrations" not in path.parts and path.name not in ("settings.py", "test_settings.py"):
                yield path


def test_no_setting_is_read_with_a_fallback_default():
    offenders = [f"{p.relative_to(REPO)}:{n}" for p in _product_files()
                 for n, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"getattr\(settings,", line)]
    assert offenders == []


def test_every_setting_the_product_reads_exists():
    names = {m for p in _product_files() for m in re.findall(r"\bsettings\.([A-Z][A-Z0-9_]+)", p.read_text())}
    assert names and [n for n in sorted(names) if not hasattr(settings, n)] == []


def test_the_beat_schedule_is_declared_in_one_place_and_names_real_tasks():
    from project.celery import app

    app.loader.import_default_modules()
    schedule = settings.CELERY_BEAT_SCHEDULE
    assert {"sweep-pending-images", "search-index-sync", "training-reaper"} <= set(schedule)
    routed = [name for name in settings.CELERY_TASK_ROUTES if "*" not in name]
    assert [t for t in [e["task"] for e in schedule.values()] + routed if t not in app.tasks] == []
