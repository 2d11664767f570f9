"""Issue 14: the shipped captioner names what is in the demo pictures, through the API.

Nothing is faked: `manage.py loupe_setup` imports the demo collection and registers the shipped
captioner (models/captioner-flickr8k) with its stored decoding; `POST /api/v1/captions/` encodes
the picture with the real EfficientNet-Lite0 and decodes with that decoding (constrained beam
search on the confident zero-shot label; animal words the classifier rules out are never said).
"""
from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from embeddings.ml.zero_shot_labels import word_forms
from embeddings.models import Image

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


@pytest.fixture
def demo():
    call_command("loupe_setup", stdout=io.StringIO())
    return {i.source_name: i.pk for i in Image.objects.filter(collection__name="demo")}


def words(text: str) -> set[str]:
    return set(text.split())


def cat_captions(api, demo) -> list[str]:
    body = api.post("/api/v1/captions/", {"image_id": demo["chelsea.png"], "n": 3}, format="json").json()
    assert body["labels"] == ["cat"], body  # Lite0's ImageNet classes: tabby, tiger cat, Egyptian cat (0.88)
    return [c["text"] for c in body["captions"]]


def test_every_caption_of_the_demo_cat_names_the_cat(api, demo):
    for text in cat_captions(api, demo):  # every n-best caption
        assert words(text) & word_forms("cat"), text


def test_no_caption_of_the_demo_cat_calls_it_a_dog(api, demo):
    """The label rules dogs out (their summed probability is 0.004); before the stored decoding
    banned them, the cat was "a brown and white dog is playing with a cat"."""
    for text in cat_captions(api, demo):
        assert not words(text) & word_forms("dog"), text


def test_without_labels_the_same_picture_gets_the_plain_decoding(api, demo):
    body = api.post("/api/v1/captions/", {"image_id": demo["chelsea.png"], "labels": False}, format="json").json()
    assert body["labels"] == [] and body["captions"][0]["labels"] == []
