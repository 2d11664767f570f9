"""Integer parameters past the database's range on the embedded default (SQLite).

PostgreSQL compares a too-large id as a numeric and finds nothing; Python's sqlite3 cannot bind
it at all and raised OverflowError, a 500 (issue 19, finding 4). So this runs the real
`project.settings` on a fresh SQLite file in a subprocess, like `make run`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

TOO_BIG = 2**63  # one past SQLite's (and PostgreSQL bigint's) largest integer

SCRIPT = f"""
import json
from django.test import Client
from django.test.utils import setup_test_environment
from tests.factories import CollectionFactory, make_image

setup_test_environment()
image = make_image(CollectionFactory(is_public=True), seed=1)
big = {TOO_BIG}
client = Client(raise_request_exception=False)
gets = ["/api/v1/search/?q=red&model_version=%d" % big, "/api/v1/search/captions/?q=red&model_version=%d" % big,
        "/api/v1/images/%d/similar/?model_version=%d" % (image.pk, big),
        "/api/v1/images/%d/labels/?model_version=%d" % (image.pk, big),
        "/api/v1/images/%d/explain/?q=red&model_version=%d" % (image.pk, big)]
posts = [("/api/v1/search/", {{"q": "red", "model_version": big}}),
         ("/api/v1/search/", {{"terms": [{{"image_id": big}}]}}),
         ("/api/v1/search/", {{"image_id": big}}),
         ("/api/v1/search/captions/", {{"image_id": big}}),
         ("/api/v1/captions/", {{"image_id": big}})]
gets.append("/api/v1/search/?q=red&page=%d" % big)
out = {{url: client.get(url).status_code for url in gets}}
out.update({{"POST " + url + " " + json.dumps(body): client.post(url, body, content_type="application/json").status_code
            for url, body in posts}})
# Ids in the path: Django's lookups know the column's range, so these are plain 404s.
paths = {{url: client.get(url).status_code for url in
         ["/api/v1/images/%d/" % big, "/api/v1/images/%d/labels/" % big, "/api/v1/images/%d/similar/" % big]}}
print("RESULT" + json.dumps([out, paths]))
"""


def test_ids_past_the_sqlite_integer_range_are_400_not_an_overflow_500(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update({"DJANGO_SETTINGS_MODULE": "project.settings", "LOUPE_VAR_DIR": str(tmp_path / "var"),
                "DEBUG": "true", "OMP_NUM_THREADS": "1"})
    run = dict(cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], check=True, **run)
    done = subprocess.run([sys.executable, "manage.py", "shell", "--no-imports", "-c", SCRIPT], **run)
    assert done.returncode == 0, done.stderr[-3000:]
    bad_params, bad_paths = json.loads(done.stdout.split("RESULT", 1)[1])
    assert set(bad_params.values()) == {400}, (bad_params, done.stderr[-3000:])  # 500 (OverflowError) before
    assert set(bad_paths.values()) == {404}, bad_paths
