"""Every page in Chromium, signed out, as a user and as staff, at 1280 px and 390 px: each answers
200, logs no console error (CSP violations included), makes no failed same-origin request (the
htmx partials it loads included) and, outside the admin, never scrolls sideways on a phone.
Issue 16, "Done when".

Set LOUPE_SCREENSHOT_DIR to keep a full-page screenshot of each visit.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from embeddings import encoding
from embeddings.models import Caption, ModelVersion
from search.services import index_rebuild
from tests.browser_fixtures import login
from tests.factories import CollectionFactory, UserFactory
from tests.search.conftest import colour_jpeg, fake_captioner, fake_version, ingest  # noqa: F401
from training.models import TrainingRun

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTHS = {"desktop": 1280, "phone": 390}


@pytest.fixture
def site(fake_version, fake_captioner):  # noqa: F811
    """A public collection, a user's private one, a finished training run and a candidate."""
    user = UserFactory(username="ula")
    UserFactory(username="sam", is_staff=True, is_superuser=True)
    public = CollectionFactory(owner=None, name="demo", is_public=True)
    mine = CollectionFactory(owner=user, name="ula's photos")
    spec = [(public, (250, 10, 10), "a red car"), (public, (10, 250, 10), "a green tree"),
            (public, (250, 10, 10), "another red car"), (mine, (10, 10, 250), "a blue sea")]
    images = [ingest(c, colour_jpeg(rgb, (64 + i, 48)), caption=text) for i, (c, rgb, text) in enumerate(spec)]
    Caption.objects.create(image=images[0], text="a generated line", source="generated")
    encoding.images_encode(image_ids=[i.pk for i in images], version=fake_version)
    for m in ("image", "caption"):
        index_rebuild(version=fake_version, modality=m)
    candidate = ModelVersion.objects.create(kind="embedding", name="candidate-1", family="joint", directory="x",
                                            metrics={"dev": {"t2i_r1": 1.0, "i2t_r1": 2.0},
                                                     "data": {"dev_images": 3, "dev_captions": 3}})
    run = TrainingRun.objects.create(kind="embedding", status="succeeded", epoch=2, total_epochs=2, step=8,
                                     total_steps=8, model_version=candidate,
                                     log_tail="training done: 2 epochs, 8 steps",
                                     history=[{"epoch": 1, "train": {"loss": 1.0}, "dev": {"t2i_r1": 1.0}},
                                              {"epoch": 2, "train": {"loss": 0.5}, "dev": {"t2i_r1": 1.0}}])
    return {"public_image": images[0].pk, "private_image": images[3].pk, "candidate": candidate.pk, "run": run.pk}


def _pages(role: str, site: dict) -> list[str]:
    pages = ["/", "/search/", "/search/?q=red", "/caption/", "/words/", f"/images/{site['public_image']}/?q=red",
             "/api/docs/", "/accounts/login/" if role == "anon" else "/?page=1"]
    if role in ("user", "staff"):
        pages += ["/upload/", "/collections/", "/accounts/token/", "/?collection=demo"]
    if role == "user":
        pages += [f"/images/{site['private_image']}/"]
    if role == "staff":
        pages += ["/admin/", "/admin/training/trainingrun/", f"/admin/training/trainingrun/{site['run']}/change/",
                  "/admin/training/trainingrun/retrain/", "/admin/embeddings/modelversion/",
                  f"/admin/embeddings/modelversion/{site['candidate']}/change/", "/admin/embeddings/collection/",
                  "/admin/embeddings/image/"]
    return pages


def settle(page, inflight: set, quiet_ms: int = 250, timeout_s: float = 30) -> None:
    """Wait until no same-origin request has been in flight for `quiet_ms` (the htmx partials
    and lazy thumbnails a page loads included). Playwright's "networkidle" is the same wait with
    a fixed 500 ms window, which made up most of this sweep's time."""
    deadline, quiet_since = time.monotonic() + timeout_s, time.monotonic()
    while True:
        page.wait_for_timeout(50)  # Playwright delivers the request events while it waits
        now = time.monotonic()
        if inflight:
            quiet_since = now
        elif (now - quiet_since) * 1000 >= quiet_ms:
            return
        assert now < deadline, ("requests never finished", [r.url for r in inflight][:5])


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("role", ["anon", "user", "staff"])
def test_every_page_is_clean(page, site, role, width):
    page.set_viewport_size({"width": WIDTHS[width], "height": 900})
    origin = urlsplit(page.base).netloc
    failures: list[str] = []
    # (a request the next navigation aborts, e.g. a lazy thumbnail, is not a failure of the page)
    page.on("requestfailed", lambda r: failures.append(f"{r.failure} {r.url}")
            if urlsplit(r.url).netloc == origin and "ERR_ABORTED" not in (r.failure or "") else None)
    page.on("response", lambda r: failures.append(f"{r.status} {r.url}")
            if r.status >= 400 and urlsplit(r.url).netloc == origin else None)
    inflight: set = set()  # same-origin requests not yet finished (see settle)
    page.on("request", lambda r: inflight.add(r) if urlsplit(r.url).netloc == origin else None)
    for done in ("requestfinished", "requestfailed"):
        page.on(done, lambda r: inflight.discard(r))
    if role != "anon":
        login(page, {"user": "ula", "staff": "sam"}[role])
    shots = os.environ.get("LOUPE_SCREENSHOT_DIR")
    for path in [*_pages(role, site), "/no-such-page/", f"/images/{site['private_image']}/?missing"]:
        expected = 404 if path == "/no-such-page/" or (path.endswith("?missing") and role == "anon") else 200
        response = page.goto(page.base + path)
        assert response is not None and response.status == expected, (path, response and response.status)
        if expected == 404:  # the product's own page, in its layout; the 404 itself is the one failure
            assert "Loupe" in page.inner_text("header") and "Not found" in page.content(), path
            failures[:] = [f for f in failures if not f.startswith(f"404 {page.base}{path}")]
            page.console_errors[:] = [e for e in page.console_errors if "status of 404" not in e]
        settle(page, inflight)
        assert not page.locator(".skeleton").count() or path.startswith("/admin"), (path, "a skeleton never filled")
        assert not failures, (path, failures)
        assert not page.console_errors, (path, page.console_errors)
        if not path.startswith("/admin") and not path.startswith("/api/docs"):
            overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 1, (path, f"scrolls sideways by {overflow}px at {WIDTHS[width]}px")
        if path.startswith("/images/") and expected == 200:  # the picture large (it was 224 px beside an empty column)
            shown = page.evaluate("document.querySelector('.main-image img').getBoundingClientRect().width")
            assert shown >= 0.5 * WIDTHS[width] if width == "desktop" else shown >= 0.85 * WIDTHS[width], (path, shown)
        if shots:
            name = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "home"
            page.screenshot(path=str(Path(shots) / f"{role}-{width}-{name}.png"), full_page=True)
