"""A test-only Django app: a processing step that can pause or crash, and a fake encoder.

Installed only by tests/reliability/fault_settings.py, i.e. only in worker subprocesses started
by the reliability tests.
"""
