"""Django settings for Loupe.

Only this module reads the environment (django-environ). Every value has a working default for
the embedded set-up: SQLite in WAL mode, a Celery broker on the local file system, and folders
under ./var. Production sets DATABASE_URL, CELERY_BROKER_URL, SECRET_KEY, ALLOWED_HOSTS,
DEBUG=false and the folders; see docs/deploy.md.
"""
from __future__ import annotations

import secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from embeddings.ml.atomic import atomic_write_text

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False) if (BASE_DIR / ".env").exists() else None

VAR_DIR = Path(env.str("LOUPE_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DEBUG", default=False)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept in var/ (dev only)."""
    key = env.str("SECRET_KEY", default="")
    if key:
        return key
    path = VAR_DIR / "secret_key"
    if not path.exists():
        atomic_write_text(path, secrets.token_urlsafe(64))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "embeddings",
    "search",
    "training",
]

MIDDLEWARE = [
    "project.middleware.RequestIdMiddleware",
    "project.middleware.RequestSizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'loupe.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers and the worker's writer run together; IMMEDIATE transactions plus a
    # busy timeout turn lock contention into waiting instead of "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": env.int("SQLITE_BUSY_TIMEOUT", default=30),
        }
    )
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://loupe")}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

# Admin brute force: lock (username, ip) after 5 failures for 15 minutes.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = 0.25  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "project.client_ip.client_ip"  # the same client address as the throttles

# Proxies in front of the app that append to X-Forwarded-For (project/client_ip.py): 0 = none,
# the header is ignored (`make run`); 1 behind deploy/nginx.conf, which overwrites the header.
LOUPE_TRUSTED_PROXIES = env.int("LOUPE_TRUSTED_PROXIES", default=0)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Files ----------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
MEDIA_URL = "/media/"
MODEL_DIR = Path(env.str("MODEL_DIR", default=str(VAR_DIR / "models")))
INDEX_DIR = Path(env.str("INDEX_DIR", default=str(VAR_DIR / "indexes")))
FEATURE_DIR = Path(env.str("FEATURE_DIR", default=str(VAR_DIR / "features")))
# Models shipped with the repository (heads only), loaded as active versions on a fresh install.
SHIPPED_MODEL_DIR = BASE_DIR / "models"
ML_DEVICE = env.str("ML_DEVICE", default="auto")  # auto | cpu | cuda
# The MiniLM encoder of search queries only (training and stored caption vectors always use the
# fp32 torch encoder): torch | onnx | onnx-int8 | torch-int8 | static. onnx-int8 measured 2.4x faster
# per query than torch (8.6 vs 21.0 ms, 1 thread) at R@1 within 0.32 points (bench/results/query_encoder.md).
# "static" (opt-in): a word-piece table distilled from MiniLM (manage.py build_query_encoder), 0.51 ms
# per query but 1.44 R@1 points lower on Flickr8k dev; onnx-int8 serves until the table exists.
LOUPE_QUERY_ENCODER = env.str("LOUPE_QUERY_ENCODER", default="onnx-int8")
if LOUPE_QUERY_ENCODER not in ("torch", "onnx", "onnx-int8", "torch-int8", "static"):
    raise ImproperlyConfigured(f"LOUPE_QUERY_ENCODER={LOUPE_QUERY_ENCODER!r}: torch, onnx, onnx-int8, "
                               "torch-int8 or static")

# --- Upload limits --------------------------------------------------------------------------
LOUPE_MAX_UPLOAD_BYTES = env.int("LOUPE_MAX_UPLOAD_BYTES", default=20 * 1024 * 1024)
LOUPE_MAX_REQUEST_BYTES = env.int("LOUPE_MAX_REQUEST_BYTES", default=64 * 1024 * 1024)
LOUPE_MAX_IMAGE_PIXELS = env.int("LOUPE_MAX_IMAGE_PIXELS", default=40_000_000)
# Shape caps, checked from the header before decoding like the pixel cap: a 1x60000 strip is only
# 60k pixels but would be resized to 224 x 13,440,000 for encoding (embeddings/ingest/imaging.py).
LOUPE_MAX_IMAGE_SIDE = env.int("LOUPE_MAX_IMAGE_SIDE", default=20_000)  # pixels, either side
LOUPE_MAX_ASPECT_RATIO = env.float("LOUPE_MAX_ASPECT_RATIO", default=20.0)  # longer / shorter side
LOUPE_MAX_FILES_PER_REQUEST = env.int("LOUPE_MAX_FILES_PER_REQUEST", default=100)
LOUPE_THUMBNAIL_SIZE = 256
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440  # larger uploads stream to a temp file
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000
DATA_UPLOAD_MAX_NUMBER_FILES = LOUPE_MAX_FILES_PER_REQUEST
FILE_UPLOAD_PERMISSIONS = 0o640

# --- API ------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: DRF takes the WWW-Authenticate challenge from the first class, so a missing or
    # bad token is 401 with `WWW-Authenticate: Token` (session first would make it a bare 403).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "DEFAULT_PAGINATION_CLASS": "project.pagination.PageNumberPagination",
    "PAGE_SIZE": 24,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    # JSON nested deeper than 32 levels is a 400 before json.loads can recurse (project/parsers.py).
    "DEFAULT_PARSER_CLASSES": [
        "project.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "project.schema.AutoSchema",  # documents every error response
    "EXCEPTION_HANDLER": "project.exceptions.exception_handler",
    "NUM_PROXIES": LOUPE_TRUSTED_PROXIES,  # DRF's own get_ident; ours use project.client_ip
    "DEFAULT_THROTTLE_CLASSES": [
        "project.throttling.AnonRateThrottle",  # DRF's, on O(1) sliding-window counters
        "project.throttling.UserRateThrottle",
        "project.throttling.ScopedRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("THROTTLE_ANON", default="600/min"),
        "user": env.str("THROTTLE_USER", default="3000/min"),
        "uploads": env.str("THROTTLE_UPLOADS", default="120/min"),
        "search": env.str("THROTTLE_SEARCH", default="1200/min"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Loupe API",
    "DESCRIPTION": "Cross-modal image search and captioning on your own collection.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "project.schema.links_hook"],
}

# --- Celery ---------------------------------------------------------------------------------
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    for _sub in ("queue", "processed", "control"):
        (BROKER_DIR / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
else:
    # Redis redelivers unacknowledged tasks after this long; training tasks hold a database
    # lease and heartbeat, so a redelivery while the first run lives is a no-op.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
# Queues (docs/deploy.md, "Queues"): `default` for short work that a person waits for (an
# upload's processing, index updates, periodic sweeps); `bulk` for imported images and the
# sweeper's batches; `gpu` for long jobs (training, promotion re-encoding, reindex-missing, word
# vectors). `make run` starts one worker for `default` and one for `gpu,bulk`, so neither kind
# ever waits behind the other.
CELERY_TASK_ROUTES = {
    "training.tasks.*": {"queue": "gpu"},
    "search.tasks.reindex_missing": {"queue": "gpu"},  # it encodes images
    "embeddings.tasks.train_word2vec": {"queue": "gpu"},
}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Seconds between sweeps that re-enqueue images still pending or processing 30 s after upload
# (the broker was down, or a worker died holding the task: see docs/deploy.md, "Lost tasks").
LOUPE_SWEEP_PERIOD_S = env.float("LOUPE_SWEEP_PERIOD_S", default=60.0)
# Seconds between runs of the training reaper (resubmits runs whose worker stopped heartbeating,
# republishes queued runs no worker took, resumes stalled promotions).
LOUPE_TRAINING_REAP_EVERY_S = env.float("LOUPE_TRAINING_REAP_EVERY_S", default=30.0)
CELERY_BEAT_SCHEDULE = {
    "sweep-pending-images": {"task": "embeddings.tasks.sweep_pending", "schedule": LOUPE_SWEEP_PERIOD_S},
    # repairs index adds/removals lost while the broker was down
    "search-index-sync": {"task": "search.tasks.index_sync", "schedule": 300.0},
    "training-reaper": {"task": "training.tasks.reap_runs", "schedule": LOUPE_TRAINING_REAP_EVERY_S,
                        "options": {"queue": "default"}},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# One scheduler per VAR_DIR, embedded (-B) or not: it holds an exclusive lock on this file for
# its lifetime (project/beat.py); a second one exits. The OS drops the lock when its holder dies.
CELERY_BEAT_SCHEDULER = "project.beat:SingleBeatScheduler"
LOUPE_BEAT_LOCK_FILE = VAR_DIR / "celerybeat.lock"
# Publishing must not hang a request when the broker is down: fail fast, the sweeper retries.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY = False
# Threads per process role (project/threads.py; docs/deploy.md, "Threads"): web processes 1; a
# Celery worker the cores divided among LOUPE_WORKER_PROCESSES worker processes of this host
# (0 = that default); management commands LOUPE_COMMAND_THREADS (0 = the worker count).
LOUPE_WEB_THREADS = env.int("LOUPE_WEB_THREADS", default=1)
# Warm starts: web and worker processes load the active models and indexes when they start
# (search/services/warmup.py); /readyz answers 503 "warming" until a web process is warm.
LOUPE_WARM_START = env.bool("LOUPE_WARM_START", default=True)
LOUPE_WORKER_PROCESSES = env.int("LOUPE_WORKER_PROCESSES", default=2)
LOUPE_WORKER_THREADS = env.int("LOUPE_WORKER_THREADS", default=0)
LOUPE_COMMAND_THREADS = env.int("LOUPE_COMMAND_THREADS", default=0)
# If set, /metrics needs "Authorization: Bearer <token>"; if not, it answers only to this machine.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
LOUPE_MAX_TASK_ATTEMPTS = env.int("LOUPE_MAX_TASK_ATTEMPTS", default=3)
# Images per image-encoder forward in the encode tasks, `build_index --missing` and
# `compute_features` (embeddings.runtime.encode_batch_size): 0 = 4 on CPU (bigger batches are
# slower per image there: docs/deploy.md, "Ingest"), 32 on CUDA. A task's whole chunk of images
# still gets one feature-cache shard and one vector write.
LOUPE_ENCODE_BATCH = env.int("LOUPE_ENCODE_BATCH", default=0)
if LOUPE_ENCODE_BATCH < 0:
    raise ImproperlyConfigured(f"LOUPE_ENCODE_BATCH={LOUPE_ENCODE_BATCH}: 0 (automatic) or a positive number")
# Seconds new vectors wait before one batched index write applies all that arrived meanwhile
# (search.models.PendingIndexItem): an upload is searchable about this long after its encoding.
SEARCH_INDEX_FLUSH_SECONDS = env.float("SEARCH_INDEX_FLUSH_SECONDS", default=1.0)
# Query text -> vector cache per web process (entries; 0 turns it off). Popular queries repeat.
SEARCH_QUERY_CACHE_SIZE = env.int("SEARCH_QUERY_CACHE_SIZE", default=4096)
# Query texts encoded at once when request threads of one web process search together
# (gthread workers; embeddings/ml/batching.py). <= 1 turns the batching off.
SEARCH_ENCODE_BATCH = env.int("SEARCH_ENCODE_BATCH", default=16)
# FAISS index choice (search.index.types.IndexConfig fields as JSON; unknown keys are an error),
# e.g. '{"hnsw_max": 5000000}' for the HNSW tier, '{"memory_budget_bytes": 2000000000}' for
# compressed IVF-PQ codes. Empty = the defaults. Applies to indexes built from then on.
SEARCH_INDEX_CONFIG = env.json("SEARCH_INDEX_CONFIG", default={})
# Images per re-encoding task when a version is promoted: any free `gpu` worker takes the next chunk.
LOUPE_PROMOTION_CHUNK = env.int("LOUPE_PROMOTION_CHUNK", default=256)
# Seconds a search query's "next page" token stays valid.
SEARCH_QUERY_TOKEN_MAX_AGE = env.int("SEARCH_QUERY_TOKEN_MAX_AGE", default=24 * 3600)
# Cosine similarity from which /images/<id>/similar/?duplicates=1 calls two images near-duplicates.
SEARCH_DUPLICATE_THRESHOLD = env.float("SEARCH_DUPLICATE_THRESHOLD", default=0.95)
# Seconds between checks of an index file on disk for a newer copy (another process rebuilt it).
SEARCH_RELOAD_CHECK_SECONDS = env.float("SEARCH_RELOAD_CHECK_SECONDS", default=1.0)

# --- Training and promotion ------------------------------------------------------------------
# Promote a finished candidate by itself when it beats the active version's primary dev metric
# by LOUPE_PROMOTE_MARGIN (a number, or JSON per kind: {"embedding": 1.0, "captioner": 0.5}).
LOUPE_AUTO_PROMOTE = env.bool("LOUPE_AUTO_PROMOTE", default=False)
LOUPE_PROMOTE_MARGIN = env.json("LOUPE_PROMOTE_MARGIN", default=1.0)
# Promotion asks for confirmation (API: force) when the candidate's evaluation set is smaller.
LOUPE_PROMOTE_MIN_EVAL_IMAGES = env.int("LOUPE_PROMOTE_MIN_EVAL_IMAGES", default=100)
# A promotion whose re-encoding made no progress for this long is resumed by the reaper.
LOUPE_SWITCH_STALL_S = env.float("LOUPE_SWITCH_STALL_S", default=600.0)
# A running training run beats every LOUPE_TRAINING_HEARTBEAT_S; one silent for the timeout is
# reaped and resumed from its checkpoint, at most LOUPE_TRAINING_MAX_ATTEMPTS times.
LOUPE_TRAINING_HEARTBEAT_S = env.float("LOUPE_TRAINING_HEARTBEAT_S", default=5.0)
LOUPE_TRAINING_HEARTBEAT_TIMEOUT_S = env.float("LOUPE_TRAINING_HEARTBEAT_TIMEOUT_S", default=60.0)
LOUPE_TRAINING_MAX_ATTEMPTS = env.int("LOUPE_TRAINING_MAX_ATTEMPTS", default=3)
# A queued run no worker has taken for this long is published again (the broker lost it).
LOUPE_TRAINING_REQUEUE_AFTER_S = env.float("LOUPE_TRAINING_REQUEUE_AFTER_S", default=600.0)
# Processes per training run on a multi-GPU worker (torchrun); 0 = one per visible GPU.
LOUPE_TRAINING_NPROC = env.int("LOUPE_TRAINING_NPROC", default=0)
# Dotted path of a callable returning the training encoders (tests use small fakes); "" = the real ones.
LOUPE_TRAINING_ENCODERS = env.str("LOUPE_TRAINING_ENCODERS", default="")
# Where the checkpoints shipped with the product live (manage.py loupe_setup registers them).
SHIPPED_MODEL_DIR = Path(env.str("SHIPPED_MODEL_DIR", default=str(BASE_DIR / "models")))
# The admin account `make run` creates (loupe_setup); a password is generated and printed if unset.
LOUPE_ADMIN_USER = env.str("LOUPE_ADMIN_USER", default="admin")
LOUPE_ADMIN_PASSWORD = env.str("LOUPE_ADMIN_PASSWORD", default="")

# --- Security -------------------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
# TLS ends at the proxy (docs/deploy.md); production sets SECURE_SSL_REDIRECT=true.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "img-src": ["'self'", "data:", "blob:"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "project.middleware.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["request_id"]}
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
        "faiss.loader": {"level": "WARNING"},
        "kombu.connection": {"level": "ERROR"},  # "No hostname was supplied" for filesystem://
    },
}
