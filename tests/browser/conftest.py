"""Browser fixtures live in tests/browser_fixtures.py (a plugin of the root conftest), so that
every test package shares ONE Playwright instance and ONE Chromium per session."""
from tests.browser_fixtures import login  # noqa: F401
