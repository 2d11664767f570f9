"""Settings of the training worker processes started by tests/reliability/test_training_lease.py:
the training tests' worker settings (fake encoders, 0.3 s heartbeat) plus a visibility timeout
read from LOUPE_TEST_VISIBILITY_TIMEOUT, so Redis hands a long run's task to a second worker."""
from tests.training.worker_settings import *  # noqa: F401,F403
from tests.training.worker_settings import CELERY_BROKER_TRANSPORT_OPTIONS, env

CELERY_BROKER_TRANSPORT_OPTIONS = {
    **CELERY_BROKER_TRANSPORT_OPTIONS,  # keeps this run's key prefix
    "visibility_timeout": env.int("LOUPE_TEST_VISIBILITY_TIMEOUT", default=3600),
    # Look for expired unacknowledged messages every second (kombu's default: every 10 s, and
    # only on every 10th look, so a redelivery could take 100 s to show up).
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}
