"""The gallery, upload and word-explorer pages in a real browser."""
import pytest

from tests import images as mk
from tests.browser_fixtures import login
from tests.factories import CollectionFactory, UserFactory, make_image

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_gallery_shows_public_images_to_anonymous_visitors(page):
    public = CollectionFactory(name="demo", is_public=True)
    make_image(public, seed=1, caption="a red square")
    private = CollectionFactory(name="hidden", is_public=False)
    make_image(private, seed=2, caption="secret")
    page.goto(page.base + "/")
    tiles = page.locator("[data-testid=grid] img")
    assert tiles.count() == 1
    assert tiles.first.get_attribute("alt") == "a red square"
    assert page.locator("img").first.evaluate("img => img.naturalWidth") > 0  # the thumbnail really loads
    page.screenshot(path=str(page.shots / "gallery.png"), full_page=True)
    tiles.first.click()
    assert "a red square" in page.locator("#captions").inner_text()


def test_upload_page_uploads_files_and_shows_each_result(page, tmp_path):
    user = UserFactory(username="alice")
    CollectionFactory(owner=user, name="trip")
    good, bad = tmp_path / "good.jpg", tmp_path / "bad.jpg"
    good.write_bytes(mk.unique_jpeg(7))
    bad.write_bytes(mk.HTML)
    login(page, "alice")
    page.goto(page.base + "/upload/")
    page.fill("#caption", "a colourful test image")
    page.set_input_files("#files", [str(good), str(bad)])
    page.wait_for_selector("#upload-list li.ok")
    page.wait_for_selector("#upload-list li.error")
    assert "stored" in page.locator("#upload-list li.ok").inner_text()
    assert "Unsupported" in page.locator("#upload-list li.error").inner_text()
    expected = [e for e in page.console_errors if "status of 400" in e]
    assert len(expected) == 1  # the rejected file's response, nothing else
    page.console_errors.remove(expected[0])
    page.screenshot(path=str(page.shots / "upload.png"), full_page=True)
    from embeddings.models import Image

    assert Image.objects.filter(collection__name="trip").count() == 1


def test_upload_into_a_new_collection_at_phone_width(page, tmp_path):
    UserFactory(username="bob")
    photo = tmp_path / "p.png"
    photo.write_bytes(mk.image_bytes("PNG"))
    page.set_viewport_size({"width": 390, "height": 800})
    login(page, "bob")
    page.goto(page.base + "/upload/")
    page.fill("#new-collection", "bobs")
    page.set_input_files("#files", [str(photo)])
    page.wait_for_selector("#upload-list li.ok")
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= 390, "page overflows a phone-width screen"
    page.screenshot(path=str(page.shots / "upload-phone.png"), full_page=True)


def test_dropzone_is_keyboard_reachable(page):
    UserFactory(username="carol")
    login(page, "carol")
    page.goto(page.base + "/upload/")
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "dropzone":
            break
    assert page.evaluate("document.activeElement.id") == "dropzone"
