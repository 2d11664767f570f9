"""The image page: the picture large, every caption once (marked by source), the captioner's n
best with scores, near-duplicates and nearest captions of other images, and skeletons while the
lazy parts load. Issue 16, item 5."""
from __future__ import annotations

import re

import pytest

from embeddings import encoding
from embeddings.models import Caption
from search.services import index_rebuild
from tests.search.conftest import colour_jpeg, ingest

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}



@pytest.fixture
def world(fake_version, collection):
    red = ingest(collection, colour_jpeg((250, 10, 10)), caption="a red car")
    red_again = ingest(collection, colour_jpeg((250, 10, 10), (40, 40)), caption="another red car")
    blue = ingest(collection, colour_jpeg((10, 10, 250)), caption="a blue sea")
    encoding.images_encode(image_ids=[red.pk, red_again.pk, blue.pk], version=fake_version)
    for m in ("image", "caption"):
        index_rebuild(version=fake_version, modality=m)
    return red, red_again, blue


def test_each_caption_is_listed_once_and_marked_by_its_source(signed_in, world):
    red = world[0]
    Caption.objects.create(image=red, text="an imported line", source="imported")
    Caption.objects.create(image=red, text="a generated line", source="generated")
    html = signed_in.get(f"/images/{red.pk}/").content.decode()
    body = html.split("<main", 1)[1]
    for text, source in (("a red car", "human"), ("an imported line", "imported"), ("a generated line", "generated")):
        pattern = rf'<li data-source="{source}">\s*<span class="tag {source}">{source}</span> {text}'
        assert re.search(pattern, body), text
        assert len(re.findall(rf"> {text}\b", body)) == 1, text  # listed once (the alt text is an attribute)
    assert re.findall(r'<li data-source="(\w+)">', body) == ["human", "imported", "generated"]
    assert body.count('class="captions"') == 1  # one list of captions (it was two: all, then generated again)


def test_the_lazy_parts_show_skeletons_not_blanks(signed_in, world):
    html = signed_in.get(f"/images/{world[0].pk}/").content.decode()
    for part in ("best-captions", "nearest-captions", "labels", "duplicates", "similar"):
        assert re.search(rf'hx-get="/search/images/{world[0].pk}/{part}/"[^>]*>\s*<div class="skeleton"', html), part


def test_best_captions_are_the_n_best_with_scores_and_a_page_view_saves_nothing(signed_in, world, fake_captioner):
    before = Caption.objects.count()
    html = signed_in.get(f"/search/images/{world[2].pk}/best-captions/", **HX).content.decode()
    assert re.findall(r"<li>a blue thing number (\d)", html) == ["0", "1", "2"]
    scores = re.findall(r"muted\" title=\"[^\"]*\">(-[\d.]+)<", html)
    assert scores == ["-0.500", "-1.500", "-2.500"] and "not saved" in html
    assert Caption.objects.count() == before and fake_captioner.generator.beam_sizes == [None]  # stored decoding


def test_best_captions_without_a_captioner_say_so(signed_in, world):
    resp = signed_in.get(f"/search/images/{world[0].pk}/best-captions/", **HX)
    assert resp.status_code == 200 and "captioning model" in resp.content.decode()


def test_near_duplicates_list_the_same_picture_and_not_a_different_one(signed_in, world):
    red, red_again, blue = world
    html = signed_in.get(f"/search/images/{red.pk}/duplicates/", **HX).content.decode()
    ids = [int(x) for x in re.findall(r'<a href="/images/(\d+)/"', html)]
    assert ids == [red_again.pk]


def test_nearest_captions_come_from_other_images(signed_in, world):
    red, red_again, blue = world
    html = signed_in.get(f"/search/images/{red.pk}/nearest-captions/", **HX).content.decode()
    texts = re.findall(r'<a href="/images/\d+/">([^<]+)</a>', html)
    assert texts[0] == "another red car" and "a red car" not in texts and "a blue sea" in texts
