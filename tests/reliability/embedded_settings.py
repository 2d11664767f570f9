"""The embedded default (project.settings: SQLite in WAL mode, the file-system broker) plus the
test-only fault app, for the SQLite load test. LOUPE_TEST_FAKE_ENCODER=1 swaps in a fake model."""
from project.settings import *  # noqa: F401,F403
from project.settings import INSTALLED_APPS, env

INSTALLED_APPS = [*INSTALLED_APPS, "tests.reliability.faultapp"]
LOUPE_TEST_FAKE_ENCODER = env.bool("LOUPE_TEST_FAKE_ENCODER", default=False)
