"""Which images a run trains and is scored on, for collections with and without splits."""
from __future__ import annotations

import pytest

from embeddings.models import Caption, Image
from tests.factories import CollectionFactory, UserFactory, make_image
from training import datasets

pytestmark = pytest.mark.django_db


def _collection_with(shas: list[str], split: str = "none"):
    collection = CollectionFactory(owner=UserFactory())
    images = []
    for i, sha in enumerate(shas):
        image = make_image(collection, seed=300 + i, caption=f"photo number {i}", split=split)
        Image.objects.filter(pk=image.pk).update(sha256=sha.ljust(64, "a"))
        images.append(image.pk)
    return collection, images


def _image_ids(collection, split: str) -> set[int]:
    return {img for _, img, _ in datasets.split_query([collection], split)}


def test_unsplit_images_divide_by_content_hash_one_in_eight_to_dev():
    shas = [f"{c}{n}" for c in "0123456789abcdef" for n in range(2)]  # 32 images, 4 with 0/1 prefixes
    collection, ids = _collection_with(shas)
    train, dev = _image_ids(collection, "train"), _image_ids(collection, "dev")
    expected_dev = {pk for pk, sha in zip(ids, shas) if sha[0] in "01"}
    assert dev == expected_dev and len(dev) == 4
    assert train == set(ids) - expected_dev
    assert _image_ids(collection, "test") == set()
    assert datasets.split_counts([collection]) == {"train": 28, "dev": 4, "test": 0}


def test_a_tiny_unsplit_collection_gets_its_smallest_hash_image_as_dev():
    collection, ids = _collection_with(["c", "9", "f", "5"])
    assert _image_ids(collection, "dev") == {ids[3]}  # "5..." is the smallest sha256
    assert _image_ids(collection, "train") == {ids[0], ids[1], ids[2]}


def test_marked_splits_are_kept_and_test_images_never_train():
    collection, train_ids = _collection_with(["0a", "1b", "2c"], split="train")  # hash prefixes do not matter
    dev_pk = make_image(collection, seed=400, caption="a dev photo", split="dev").pk
    test_pk = make_image(collection, seed=401, caption="a test photo", split="test").pk
    assert _image_ids(collection, "train") == set(train_ids)
    assert _image_ids(collection, "dev") == {dev_pk}
    assert _image_ids(collection, "test") == {test_pk}


def test_generated_captions_and_failed_images_are_left_out():
    collection, ids = _collection_with(["3", "4", "0"])
    Caption.objects.filter(image_id=ids[0]).update(source=Caption.Source.GENERATED)
    Image.objects.filter(pk=ids[1]).update(status=Image.Status.FAILED)
    assert _image_ids(collection, "train") == set()
    assert _image_ids(collection, "dev") == {ids[2]}
