"""Issue 20 item 6: plain one-object queries on a fresh install's demo collection, in a browser.

Nothing is faked: `manage.py loupe_setup` imports the demo collection (embeddings/ingest/demo.py)
and registers the shipped default embedding (models/embedding-open-vocab); the pictures are
encoded with the real EfficientNet-Lite0 and the queries with the real MiniLM, and each query is
typed into the search page as a user would. The intended picture must be among the first three
tiles.

Two queries miss today, and are kept here as strict expected failures so that a model that
fixes them (or a regression that breaks another query) shows up: "the moon" ranks the moon 15th
(ConSE v0 ranks it 16th: neither Lite0's ImageNet classes nor Flickr8k have a moon) and "an
astronaut" ranks the astronaut 18th (ConSE v0: 3rd; Flickr8k training pulls a smiling woman
towards its people captions). bench/demo_queries.py measures the same ranks without a browser.
"""
from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from embeddings import encoding
from embeddings.models import Image, ModelVersion
from search.services import index_rebuild

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FIND = {  # query -> the demo picture it names
    "a cat": "chelsea.png", "a rocket": "rocket.jpg", "a cup of coffee": "coffee.png",
    "a motorcycle": "motorcycle_left.png", "a horse": "horse.png", "a flower": "flower.jpg", "coins": "coins.png",
    "a camera": "camera.png", "a brick wall": "brick.png", "a clock": "clock_motion.png",
}
KNOWN_MISSES = {"the moon": "moon.png", "an astronaut": "astronaut.png"}


@pytest.fixture
def demo_install():
    """A fresh install's demo collection, encoded by the shipped embedding and indexed."""
    call_command("loupe_setup", stdout=io.StringIO())
    version = ModelVersion.objects.get(kind="embedding", status="active")
    assert version.name == "embedding-open-vocab"  # the shipped default, not ConSE v0
    images = list(Image.objects.filter(collection__name="demo"))
    assert len(images) == 20
    encoding.images_encode(image_ids=[i.pk for i in images], version=version)
    for modality in ("image", "caption"):
        index_rebuild(version=version, modality=modality)
    return {i.pk: i.source_name for i in images}


def top3(page, names: dict[int, str], query: str) -> list[str]:
    page.fill("#q", query)
    page.keyboard.press("Enter")
    page.wait_for_function("q => new URLSearchParams(location.search).get('q') === q", arg=query)
    page.wait_for_selector("#results .tile")
    tiles = page.locator("#results .tile > a:first-child")
    hrefs = tiles.evaluate_all("links => links.slice(0, 3).map(a => a.pathname)")
    return [names[int(h.strip("/").split("/")[1])] for h in hrefs]


def test_one_object_queries_find_their_picture_in_the_top_3(page, demo_install):
    page.goto(page.base + "/search/")  # the demo collection is public: no login
    found = {query: top3(page, demo_install, query) for query in FIND}
    page.screenshot(path=str(page.shots / "demo-search.png"), full_page=True)
    missed = {q: found[q] for q, name in FIND.items() if name not in found[q]}
    assert not missed, f"not in the top 3: {missed}"


@pytest.mark.xfail(strict=True, reason="known misses of the shipped default (see the module docstring)")
@pytest.mark.parametrize("query", sorted(KNOWN_MISSES))
def test_known_misses(page, demo_install, query):
    page.goto(page.base + "/search/")
    assert KNOWN_MISSES[query] in top3(page, demo_install, query)
