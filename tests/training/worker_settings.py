"""Settings of the worker processes started by tests/training (test settings + fakes)."""
from project.test_settings import *  # noqa: F401,F403

LOUPE_TRAINING_ENCODERS = "tests.training.fakes.FakeEncoders"
LOUPE_TRAINING_HEARTBEAT_S = 0.3
LOUPE_TRAINING_HEARTBEAT_TIMEOUT_S = 3.0
ML_DEVICE = "cpu"
LOUPE_PROMOTION_CHUNK = 5
