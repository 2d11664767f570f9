"""The search, caption and image pages in a real browser (Chromium via Playwright), fake embedder.

Checks what only a browser shows: htmx swaps results without a reload, terms and the drop
zone work from the keyboard, nothing overflows a phone screen, the heatmap is drawn, and no
page logs a console error (CSP violations included).
"""
from __future__ import annotations

import pytest

from embeddings import encoding
from search.services import index_rebuild
from tests.browser_fixtures import login
from tests.factories import UserFactory
from tests.search.conftest import colour_jpeg, ingest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def indexed(fake_version):
    from tests.factories import CollectionFactory

    user = UserFactory(username="dora")
    collection = CollectionFactory(owner=user, name="colours")
    spec = [(colour_jpeg((250, 10, 10)), "a red car"), (colour_jpeg((10, 250, 10)), "a green tree"),
            (colour_jpeg((10, 10, 250)), "a blue sea"),
            (colour_jpeg((250, 10, 10), (70, 70), split_rgb=(10, 10, 250)), "a red bus")]  # left red, right blue
    images = [ingest(collection, data, caption=text) for data, text in spec]
    encoding.images_encode(image_ids=[i.pk for i in images], version=fake_version)
    for m in ("image", "caption"):
        index_rebuild(version=fake_version, modality=m)
    return images


def test_text_search_updates_results_in_place_and_pages_are_shareable(page, indexed):
    login(page, "dora")
    page.goto(page.base + "/search/")
    page.evaluate("window.__noReload = true")
    page.fill("#q", "blue")
    page.keyboard.press("Enter")
    page.wait_for_selector("#results .tile")
    assert page.evaluate("window.__noReload") is True  # swapped by htmx, not a page load
    first = page.locator("#results .tile a").first.get_attribute("href")
    assert first.startswith(f"/images/{indexed[2].pk}/") and "q=blue" in first
    assert "/search/?q=blue" in page.url
    assert page.locator("#results .score").count() == 4


def test_weighted_terms_and_filters_from_the_keyboard(page, indexed):
    login(page, "dora")
    page.goto(page.base + "/search/")
    page.fill("#q", "red")
    page.focus("#term-subtract")
    page.keyboard.press("Enter")  # a "-1" term row appears and takes the focus
    assert page.evaluate("document.activeElement.name") == "t_text"
    page.keyboard.type("blue")
    page.keyboard.press("Enter")
    page.wait_for_selector("#results .tile")
    assert page.locator("#results .tile a").first.get_attribute("href").startswith(f"/images/{indexed[0].pk}/")
    page.select_option("#f-has-caption", "no")  # a filter change re-runs the search
    page.wait_for_selector("#results .empty")


def test_search_by_dropped_image_and_no_overflow_at_phone_width(page, indexed, tmp_path):
    photo = tmp_path / "q.jpg"
    photo.write_bytes(colour_jpeg((20, 240, 20), (40, 30)))
    page.set_viewport_size({"width": 390, "height": 800})
    login(page, "dora")
    page.goto(page.base + "/search/")
    page.set_input_files("#search-image", str(photo))
    page.wait_for_selector("#results .tile")
    assert page.locator("#results .tile a").first.get_attribute("href").startswith(f"/images/{indexed[1].pk}/")
    assert page.is_visible("#search-preview")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "page overflows a phone-width screen"
    page.screenshot(path=str(page.shots / "search-phone.png"), full_page=True)


def test_image_page_draws_the_heatmap_and_loads_its_extras(page, indexed):
    login(page, "dora")
    page.goto(page.base + f"/images/{indexed[3].pk}/?q=red")
    canvas = page.wait_for_selector(".heatmap-wrap canvas")
    page.wait_for_function("document.getElementById('explain-status').textContent.includes('Red marks')")
    # left half red, right half blue: the heatmap is stronger (more opaque) on the left
    alpha = page.evaluate("""() => { const c = document.querySelector('.heatmap-wrap canvas');
        const d = c.getContext('2d'); const y = Math.floor(c.height / 2);
        return [d.getImageData(Math.floor(c.width * 0.1), y, 1, 1).data[3],
                d.getImageData(Math.floor(c.width * 0.9), y, 1, 1).data[3]]; }""")
    assert alpha[0] > alpha[1], alpha
    assert canvas.get_attribute("aria-hidden") == "true"
    page.wait_for_selector(".similar .tile")
    page.wait_for_selector(".zero-shot .labels li")
    page.wait_for_selector("text=Generate a caption")
    page.screenshot(path=str(page.shots / "image-extras.png"), full_page=True)


def test_image_page_loads_its_similar_descriptions_section(page, indexed):
    login(page, "dora")
    page.goto(page.base + f"/images/{indexed[3].pk}/")
    section = page.wait_for_selector("section.similar-descriptions")
    assert section.query_selector("h2").inner_text() == "Similar descriptions"
    # no paragraph model on this install: the htmx partial replaces the loader with the note
    page.wait_for_selector(".similar-descriptions-list >> text=No paragraph model yet")
    assert not page.query_selector(".similar-descriptions-list .error-box")


def test_caption_page_captions_a_chosen_file(page, fake_version, fake_captioner, tmp_path):
    UserFactory(username="erin")
    photo = tmp_path / "b.jpg"
    photo.write_bytes(colour_jpeg((10, 10, 240)))
    login(page, "erin")
    page.goto(page.base + "/caption/")
    page.set_input_files("#caption-image", str(photo))
    page.wait_for_selector("#caption-result li")
    assert "a blue thing number 0" in page.inner_text("#caption-result")


def test_caption_page_shows_no_broken_preview_for_a_bad_file(page, fake_version, fake_captioner, tmp_path):
    UserFactory(username="fay")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"<html>not an image</html>")
    login(page, "fay")
    page.goto(page.base + "/caption/")
    page.set_input_files("#caption-image", str(bad))
    page.wait_for_selector("#caption-result .error-box")
    page.wait_for_timeout(200)  # the preview's load or error event has fired by now
    preview = page.locator("#caption-preview")
    assert not preview.is_visible() or preview.evaluate("img => img.naturalWidth") > 0  # never the broken icon
    good = tmp_path / "good.jpg"
    good.write_bytes(colour_jpeg((10, 10, 240)))
    page.set_input_files("#caption-image", str(good))
    page.wait_for_selector("#caption-result li")
    page.wait_for_function("document.getElementById('caption-preview').naturalWidth > 0")
    assert preview.is_visible()


def test_search_box_is_styled_like_the_other_inputs_and_filter_choices_fit(page, indexed):
    page.goto(page.base + "/search/")
    q, keyword = page.locator("#q").bounding_box(), page.locator("#f-keyword").bounding_box()
    assert q["height"] >= keyword["height"]
    assert page.locator("#q").evaluate("e => getComputedStyle(e).borderRadius") == \
        page.locator("#f-keyword").evaluate("e => getComputedStyle(e).borderRadius")
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        # each select's widest option, in the select's font, fits inside it (with room for the arrow)
        clipped = page.evaluate("""() => {
          const ctx = document.createElement('canvas').getContext('2d');
          const out = [];
          for (const s of document.querySelectorAll('#search-filters select')) {
            const cs = getComputedStyle(s);
            ctx.font = cs.font;
            const room = s.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight) - 20;
            for (const o of s.options) if (ctx.measureText(o.text).width > room) out.push(s.id + ': ' + o.text);
          }
          return out;
        }""")
        assert clipped == [], (width, clipped)


def test_filters_fold_on_a_phone_and_stay_open_on_a_desktop_or_when_set(page, indexed):
    """Issue 16: on a phone the filters filled a whole screen above the results."""
    login(page, "dora")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(page.base + "/search/?q=blue")
    assert page.evaluate("document.querySelector('details.filters-fold').open") is False
    assert page.locator("#f-split").is_hidden()
    first_tile = page.locator("#results .tile").first.bounding_box()
    assert first_tile["y"] < 844, first_tile  # the first result is on the first screen
    page.click("details.filters-fold > summary")
    assert page.locator("#f-split").is_visible()
    page.goto(page.base + "/search/?q=blue&split=train")
    assert page.evaluate("document.querySelector('details.filters-fold').open") is True  # a filter is set
    assert "(1 active)" in page.inner_text("details.filters-fold > summary")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(page.base + "/search/?q=blue")
    assert page.locator("#f-split").is_visible()
