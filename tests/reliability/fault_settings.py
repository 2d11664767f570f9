"""Test-only settings for worker-fault tests: project.test_settings plus knobs read from the env.

Only test worker subprocesses use this module (DJANGO_SETTINGS_MODULE=tests.reliability.fault_settings).
It adds `tests.reliability.faultapp`, whose processing step can pause or crash on demand, and lets
a test shorten the Redis visibility timeout so a killed worker's unacknowledged task comes back
within seconds instead of an hour. No application code reads these knobs.
"""
from project.test_settings import *  # noqa: F401,F403
from project.test_settings import CELERY_BROKER_TRANSPORT_OPTIONS, INSTALLED_APPS, env

INSTALLED_APPS = [*INSTALLED_APPS, "tests.reliability.faultapp"]

CELERY_BROKER_TRANSPORT_OPTIONS = {
    **CELERY_BROKER_TRANSPORT_OPTIONS,  # keeps this run's key prefix
    "visibility_timeout": env.int("LOUPE_TEST_VISIBILITY_TIMEOUT", default=3600),
    # Look for expired unacknowledged messages every second (kombu's default: every 10 s, and
    # only on every 10th look, so a redelivery could take 100 s to show up).
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}
# Folder where the fault step logs "<pid> <attempts> <image ids>" each time it runs.
LOUPE_TEST_FAULT_DIR = env.str("LOUPE_TEST_FAULT_DIR", default="")
# Seconds the fault step sleeps on an image's first attempt (a window to SIGKILL the worker).
LOUPE_TEST_STEP_DELAY = env.float("LOUPE_TEST_STEP_DELAY", default=0.0)
# Images whose source name contains this crash the step: "exit" kills the process like a
# segfault would (os._exit), "raise" raises an exception.
LOUPE_TEST_POISON = env.str("LOUPE_TEST_POISON", default="")
LOUPE_TEST_POISON_MODE = env.str("LOUPE_TEST_POISON_MODE", default="exit")
# Images whose source name contains this make the step sleep LOUPE_TEST_SLOW_SECONDS on every try.
LOUPE_TEST_SLOW_NAME = env.str("LOUPE_TEST_SLOW_NAME", default="")
LOUPE_TEST_SLOW_SECONDS = env.float("LOUPE_TEST_SLOW_SECONDS", default=30.0)
# Replace the pretrained encoders by a deterministic fake (for tests where the model is not the point).
LOUPE_TEST_FAKE_ENCODER = env.bool("LOUPE_TEST_FAKE_ENCODER", default=False)
