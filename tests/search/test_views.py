"""Search and caption pages, the image-page partials: htmx swaps, no-JS fallbacks, CSP, privacy."""
from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from embeddings import encoding
from embeddings.models import Caption
from search.services import index_rebuild
from tests.factories import CollectionFactory
from tests.search.conftest import colour_jpeg, ingest

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def world(fake_version, collection):
    spec = [((250, 10, 10), "a red car"), ((10, 250, 10), "a green tree"), ((10, 10, 250), "a blue sea")]
    images = [ingest(collection, colour_jpeg(rgb), caption=text) for rgb, text in spec]
    encoding.images_encode(image_ids=[i.pk for i in images], version=fake_version)
    for m in ("image", "caption"):
        index_rebuild(version=fake_version, modality=m)
    return images


def tile_ids(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'class="tile">\s*<a href="/images/(\d+)/', html)]


def assert_csp_clean(html: str) -> None:
    """No inline scripts, inline styles or inline event handlers (the CSP would block them)."""
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline <script>"
    assert not re.search(r"\sstyle=", html) and "<style" not in html, "inline style"
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"


def test_search_page_renders_a_form_that_works_without_javascript(browser, world):
    resp = browser.get("/search/")
    html = resp.content.decode()
    assert resp.status_code == 200 and 'id="search-form"' in html and 'name="q"' in html
    assert 'hx-post="/search/results/"' in html and 'enctype="multipart/form-data"' in html
    assert "js/search.js" in html and 'id="search-drop"' in html and 'tabindex="0"' in html
    assert_csp_clean(html)


def test_text_query_by_get_shows_ranked_tiles_with_scores(browser, world):
    resp = browser.get("/search/", {"q": "red"})
    html = resp.content.decode()
    assert tile_ids(html)[0] == world[0].pk and html.count('class="score"') == 3
    assert "3 results" in html and "?q=red" in html  # tiles link to the image page with the query
    assert_csp_clean(html)


def test_tiles_take_their_alt_text_from_the_first_caption_without_a_query_per_tile(
        browser, world, collection, fake_version):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    bare = ingest(collection, colour_jpeg((240, 30, 30)))  # no caption: the fallback alt text
    encoding.images_encode(image_ids=[bare.pk], version=fake_version)
    index_rebuild(version=fake_version, modality="image")
    browser.get("/search/results/", {"q": "red"}, **HX)  # warm: session, version row
    with CaptureQueriesContext(connection) as ctx:
        html = browser.get("/search/results/", {"q": "red"}, **HX).content.decode()
    # session, user, version + deny-list, then ONE hydration query for all 4 tiles and their captions
    assert len(ctx.captured_queries) == 4, [q["sql"][:80] for q in ctx.captured_queries]
    alts = dict(re.findall(r'<a href="/images/(\d+)/[^"]*">\s*<img [^>]*alt="([^"]*)"', html))
    assert alts == {str(world[0].pk): "a red car", str(world[1].pk): "a green tree",
                    str(world[2].pk): "a blue sea", str(bare.pk): "image"}
    Caption.objects.create(image=bare, text="a late caption", source=Caption.Source.HUMAN)
    html = browser.get("/search/results/", {"q": "red"}, **HX).content.decode()
    assert 'alt="a late caption"' in html  # read fresh


def test_htmx_post_returns_the_results_partial_and_a_shareable_url(browser, world):
    resp = browser.post("/search/results/", {"q": "blue", "k": "24"}, **HX)
    html = resp.content.decode()
    assert resp.status_code == 200 and "<html" not in html and tile_ids(html)[0] == world[2].pk
    assert resp["HX-Push-Url"].startswith("/search/?q=blue")


def test_uploaded_image_and_weighted_terms_search_and_page_with_a_token(browser, world, fake_version, collection):
    more = [ingest(collection, colour_jpeg((240, 5 + i, 5), (30 + i, 30)), caption=f"red {i}") for i in range(30)]
    encoding.images_encode(image_ids=[m.pk for m in more], version=fake_version)
    index_rebuild(version=fake_version, modality="image")
    resp = browser.post("/search/results/", {
        "image": SimpleUploadedFile("q.jpg", colour_jpeg((250, 0, 0))), "image_weight": "1",
        "t_text": ["green", ""], "t_weight": ["-0.5", "1"]}, **HX)
    html = resp.content.decode()
    assert resp.status_code == 200, html
    assert len(tile_ids(html)) == 24 and "query=" in resp["HX-Push-Url"]
    nxt = re.search(r'hx-get="(/search/results/\?[^"]+page=2)"', html).group(1).replace("&amp;", "&")
    page2 = browser.get(nxt, **HX).content.decode()
    assert len(tile_ids(page2)) == 9 and not set(tile_ids(page2)) & set(tile_ids(html))


def test_errors_render_as_a_message_with_the_right_status(browser, world):
    """Full pages carry the error status; htmx partials answer 200 with the message to swap in."""
    resp = browser.get("/search/", {"q": "x" * 2000})
    assert resp.status_code == 400 and "error-box" in resp.content.decode()
    resp = browser.get("/search/results/", {"q": "x" * 2000}, **HX)
    body = resp.content.decode()
    assert resp.status_code == 200 and "error-box" in body and 'class="tile"' not in body
    resp = browser.post("/search/results/", {"t_text": ["red"], "t_weight": ["lots"]}, **HX)
    assert resp.status_code == 200 and "weights" in resp.content.decode()
    resp = browser.post("/search/", {"image": SimpleUploadedFile("x.jpg", b"nope")})
    assert resp.status_code == 400 and "error-box" in resp.content.decode()


def test_filters_and_privacy_on_the_page(browser, world, other_user, fake_version):
    theirs = CollectionFactory(owner=other_user, name="secret")
    hidden = ingest(theirs, colour_jpeg((255, 0, 0), (50, 50)), caption="red secret")
    encoding.images_encode(image_ids=[hidden.pk], version=fake_version)
    index_rebuild(version=fake_version, modality="image")
    html = browser.get("/search/", {"q": "red"}).content.decode()
    assert hidden.pk not in tile_ids(html) and "secret" not in html
    html = browser.get("/search/", {"q": "red", "keyword": "tree"}).content.decode()
    assert tile_ids(html) == [world[1].pk]
    assert browser.get("/search/", {"q": "red", "collection": "secret"}).status_code == 400


def test_image_page_includes_the_extras_and_its_partials_render(browser, world, fake_version):
    page = browser.get(f"/images/{world[0].pk}/?q=red").content.decode()
    assert 'id="search-extras"' in page and f"/api/v1/images/{world[0].pk}/explain/" in page
    assert 'value="red"' in page  # the heatmap form is pre-filled with the last query
    assert_csp_clean(page.split('<section class="image-side">', 1)[1])
    similar = browser.get(f"/search/images/{world[0].pk}/similar/", **HX).content.decode()
    assert sorted(tile_ids(similar)) == sorted([world[1].pk, world[2].pk]) and 'class="score"' in similar
    labels = browser.get(f"/search/images/{world[0].pk}/labels/", **HX).content.decode()
    assert "tench" in labels
    captions = browser.get(f"/search/images/{world[0].pk}/captions/", **HX).content.decode()
    assert "Generate a caption" in captions


def test_generate_then_accept_a_caption_from_the_image_page(browser, world, fake_captioner):
    resp = browser.post(f"/search/images/{world[2].pk}/captions/", **HX)
    html = resp.content.decode()
    assert resp.status_code == 200 and "a blue thing number 0" in html and "Accept" in html
    generated = Caption.objects.get(image=world[2], source="generated")
    resp = browser.post(f"/search/captions/{generated.pk}/accept/", {"text": "a calm blue sea"}, **HX)
    assert resp.status_code == 200 and "Caption accepted" in resp.content.decode()
    generated.refresh_from_db()
    assert (generated.source, generated.text) == ("human", "a calm blue sea")


def test_other_users_get_404_on_private_partials_and_no_caption_tools(world, other_user):
    client = Client()
    client.force_login(other_user)
    for path in ("similar", "labels", "captions", "duplicates", "nearest-captions", "best-captions"):
        assert client.get(f"/search/images/{world[0].pk}/{path}/").status_code == 404, path
    world[0].collection.is_public = True
    world[0].collection.save()
    html = client.get(f"/search/images/{world[0].pk}/captions/").content.decode()
    assert "Generate a caption" not in html
    caption = world[0].captions.get()
    assert client.post(f"/search/captions/{caption.pk}/accept/", {"text": "hijack"}).status_code == 403


def test_caption_page_captions_a_dropped_image(browser, fake_version, fake_captioner):
    page = browser.get("/caption/").content.decode()
    assert 'id="caption-drop"' in page and 'name="image"' in page
    assert_csp_clean(page)
    resp = browser.post("/caption/", {"image": SimpleUploadedFile("g.jpg", colour_jpeg((5, 250, 5))), "n": "3"}, **HX)
    html = resp.content.decode()
    assert resp.status_code == 200 and "a green thing number 0" in html and html.count("<li>") == 3


def test_caption_page_without_a_captioner_says_so(browser, fake_version):
    resp = browser.post("/caption/", {"image": SimpleUploadedFile("g.jpg", colour_jpeg((5, 250, 5)))})
    assert resp.status_code == 503 and "captioning model" in resp.content.decode()
    resp = browser.post("/caption/", {"image": SimpleUploadedFile("g.jpg", colour_jpeg((5, 250, 5)))}, **HX)
    assert resp.status_code == 200 and "captioning model" in resp.content.decode()


def test_image_page_extras_do_not_encode_an_unencoded_image_on_a_page_view(browser, fake_version, collection,
                                                                          monkeypatch):
    from embeddings import runtime

    img = ingest(collection, colour_jpeg((9, 9, 9)))
    monkeypatch.setattr(runtime, "cached_features", lambda *a: pytest.fail("encoded during a page view"))
    for path in ("similar", "labels", "duplicates", "nearest-captions", "best-captions"):
        resp = browser.get(f"/search/images/{img.pk}/{path}/", **HX)
        assert resp.status_code == 200 and "not been encoded" in resp.content.decode(), path


def test_rank_higher_without_a_keyword_boosts_images_whose_captions_contain_the_query(browser, fake_version,
                                                                                      collection):
    """Issue 16: "frisbee" with "rank higher" gave the plain search's scores and order (the boost
    needed a separate keyword); with none, the query text is the keyword."""
    sea = ingest(collection, colour_jpeg((10, 10, 250)), caption="the sea")
    kite = ingest(collection, colour_jpeg((10, 80, 250)), caption="a blue kite")
    encoding.images_encode(image_ids=[sea.pk, kite.pk], version=fake_version)
    index_rebuild(version=fake_version, modality="image")
    plain = browser.get("/search/", {"q": "blue"}).content.decode()
    assert tile_ids(plain) == [sea.pk, kite.pk]
    boosted = browser.get("/search/", {"q": "blue", "keyword_mode": "boost"}).content.decode()
    assert tile_ids(boosted) == [kite.pk, sea.pk] and boosted.count('class="kw"') == 1
    explicit = browser.get("/search/", {"q": "blue", "keyword": "sea", "keyword_mode": "boost"}).content.decode()
    assert tile_ids(explicit) == [sea.pk, kite.pk] and 'class="kw"' in explicit


def test_search_page_offers_the_photo_minus_dog_plus_cat_example_and_it_searches(browser, world):
    """Issue 17: the talk's vector arithmetic, as a clickable example with where it comes from."""
    html = browser.get("/search/").content.decode()
    example = re.search(r'id="arithmetic-example">.*?href="([^"]+)"', html, re.S)
    assert example and "− dog + cat" in html and "DeViSE" in html and "ConSE" in html
    url = example.group(1).replace("&amp;", "&")
    assert "t_text=dog&t_weight=-1&t_text=cat&t_weight=1" in url
    assert browser.get(url).status_code == 200
    like = browser.get("/search/", {"image_id": world[0].pk}).content.decode()
    photo = re.search(r'href="([^"]+)">this photo − dog \+ cat</a>', like)
    assert photo and f"image_id={world[0].pk}&amp;t_text=dog" in photo.group(1)
    resp = browser.get(photo.group(1).replace("&amp;", "&"))
    assert resp.status_code == 200 and tile_ids(resp.content.decode())
    assert_csp_clean(like)


def test_caption_page_greedy_gives_one_caption_and_says_so(browser, fake_version, fake_captioner):
    resp = browser.post("/caption/", {"image": SimpleUploadedFile("g.jpg", colour_jpeg((5, 250, 5))), "beam": "1",
                                      "n": "3"}, **HX)
    html = resp.content.decode()
    assert resp.status_code == 200 and html.count("<li>") == 1
    assert "Greedy decoding gives one caption; choose a wider beam for 3." in html
    assert fake_captioner.generator.beam_sizes == [1]
