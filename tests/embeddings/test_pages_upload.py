"""The upload page in Chromium: a new collection made once and offered afterwards, a readable
upload list (issue 16 item 3)."""
import pytest

from tests import images as mk
from tests.browser_fixtures import login
from tests.factories import CollectionFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _upload(page, paths, done):
    page.set_input_files("#files", [str(p) for p in paths])
    page.wait_for_function("n => document.querySelectorAll('#upload-list li.ok').length >= n", arg=done)


def test_second_batch_into_a_new_collection_posts_it_once_and_lists_it(page, tmp_path):
    user = UserFactory(username="carol")
    CollectionFactory(owner=user, name="old")
    files = [tmp_path / f"{i}.jpg" for i in range(2)]
    for i, f in enumerate(files):
        f.write_bytes(mk.unique_jpeg(20 + i))
    posts = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" and "/collections/" in r.url else None)
    login(page, "carol")
    page.goto(page.base + "/upload/")
    page.fill("#new-collection", "holiday")
    _upload(page, files[:1], 1)
    _upload(page, files[1:], 2)  # a 409 here would fail the page fixture's console check
    assert len(posts) == 1
    assert page.locator("#collection").input_value() == "holiday"
    assert "holiday" in page.locator("#collection option").all_inner_texts()
    assert page.locator("#new-collection").input_value() == ""
    from embeddings.models import Image

    assert Image.objects.filter(collection__name="holiday").count() == 2


def test_progress_bars_leave_the_status_text_readable(page, tmp_path):
    user = UserFactory(username="dave")
    CollectionFactory(owner=user, name="trip")
    photo = tmp_path / "a-rather-long-file-name-for-the-list.jpg"
    photo.write_bytes(mk.unique_jpeg(31))
    login(page, "dave")
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 800})
        page.goto(page.base + "/upload/")
        _upload(page, [photo], 1)
        row = page.locator("#upload-list li.ok").first
        bar, status = row.locator("progress").bounding_box(), row.locator(".result").bounding_box()
        assert "present" in row.inner_text() or "stored" in row.inner_text()
        if bar is not None:  # a bar still shown must not overlap the status text
            overlap_x = min(bar["x"] + bar["width"], status["x"] + status["width"]) - max(bar["x"], status["x"])
            overlap_y = min(bar["y"] + bar["height"], status["y"] + status["height"]) - max(bar["y"], status["y"])
            assert overlap_x <= 0 or overlap_y <= 0, (width, bar, status)
