"""The embedded default (SQLite + file-system broker) with the fake encoders, for subprocesses."""
from project.settings import *  # noqa: F401,F403

LOUPE_TRAINING_ENCODERS = "tests.training.fakes.FakeEncoders"
LOUPE_TRAINING_HEARTBEAT_S = 0.5
ML_DEVICE = "cpu"
