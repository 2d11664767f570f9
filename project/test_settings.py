"""Settings for `make test`: the real PostgreSQL and Redis servers of this machine.

TEST_DATABASE_URL / TEST_BROKER_URL override the defaults. The embedded default (SQLite and the
file-system broker) is exercised separately by tests that start subprocesses with the plain
settings.
"""
from project.settings import *  # noqa: F401,F403
import os
from pathlib import Path

from project.settings import VAR_DIR, env

DATABASES = {"default": env.db("TEST_DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/test")}
# Several test runs may share this machine's servers at once: each run gets its own database and
# its own broker key prefix, and the worker processes it starts inherit TEST_RUN_ID.
TEST_RUN_ID = env.str("TEST_RUN_ID", default=str(os.getpid()))
os.environ.setdefault("TEST_RUN_ID", TEST_RUN_ID)
DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME", default=f"loupe_test_{TEST_RUN_ID}")}
CELERY_BROKER_URL = env.str("TEST_BROKER_URL", default="redis://127.0.0.1:6379/15")
BROKER_KEY_PREFIX = f"loupe-test-{TEST_RUN_ID}:"
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600, "global_keyprefix": BROKER_KEY_PREFIX}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "tests"}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MEDIA_ROOT = Path(env.str("TEST_MEDIA_ROOT", default=str(VAR_DIR / "test-media")))
MODEL_DIR = Path(env.str("TEST_MODEL_DIR", default=str(VAR_DIR / "test-models")))
INDEX_DIR = Path(env.str("TEST_INDEX_DIR", default=str(VAR_DIR / "test-indexes")))
FEATURE_DIR = Path(env.str("TEST_FEATURE_DIR", default=str(VAR_DIR / "test-features")))
AXES_ENABLED = env.bool("TEST_AXES_ENABLED", default=True)
LOUPE_WARM_START = False  # tests that need it start warm-up themselves
# Fakes stand in for the embedders of most tests; the query-encoder tests set the other kinds.
LOUPE_QUERY_ENCODER = "torch"
# Tests render pages without a collectstatic step.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
