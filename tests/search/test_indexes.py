"""Index services: build from stored vectors, manifest checks, corruption, swaps, add/remove, sync."""
from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from embeddings import encoding
from embeddings.models import Caption, Image, ModelVersion
from embeddings.services import image_delete
from search import index as si
from search import registry, selectors, tasks
from search.models import SearchIndex
from search.services import IndexRebuilding, index_for_search, index_rebuild, index_sync, reindex_missing, search_images
from search.services.queries import QueryTerm
from tests.factories import CollectionFactory
from tests.search.conftest import DIM, colour_jpeg, ingest, store_vector, unit

pytestmark = pytest.mark.django_db
REAL_CACHED_FEATURES = encoding.runtime.cached_features  # before fake_version swaps in its stand-in


@pytest.fixture
def enqueued(published):
    """Messages the services publish (the Celery boundary), instead of a broker."""
    return published


def _images_with_vectors(collection, version, n, seed=0):
    rng = np.random.default_rng(seed)
    vectors = unit(rng.standard_normal((n, DIM)))
    images = [ingest(collection, colour_jpeg((i % 256, (i * 7) % 256, (i * 13) % 256))) for i in range(n)]
    for img, vec in zip(images, vectors):
        store_vector(img, version, vec)
    return images, vectors


def _ids_of(page):
    return [hit.image.pk for hit in page.results]


def test_rebuild_indexes_exactly_the_stored_vectors_and_records_it(fake_version, collection):
    images, vectors = _images_with_vectors(collection, fake_version, 30)
    record = index_rebuild(version=fake_version, modality="image")
    assert (record.status, record.count, record.index_type, record.recall_at_10) == ("ready", 30, "flat", 1.0)
    index = index_for_search(version=fake_version, modality="image")
    q = unit(np.arange(DIM, dtype=np.float32) - 3)
    hits = index.search(q[None], 10)[0]
    expected = np.argsort(-(vectors @ q), kind="stable")[:10]
    assert hits.ids.tolist() == [images[i].pk for i in expected]
    np.testing.assert_allclose(hits.scores, (vectors @ q)[expected], atol=1e-5)
    manifest = si.read_manifest(registry.index_path(fake_version.pk, "image"))
    got = (manifest.model_version_id, manifest.dim, manifest.modality, manifest.count)
    assert got == (str(fake_version.pk), DIM, "image", 30)


def test_missing_index_with_vectors_answers_503_and_enqueues_a_rebuild(fake_version, collection, enqueued):
    _images_with_vectors(collection, fake_version, 3)
    with pytest.raises(IndexRebuilding) as err:
        index_for_search(version=fake_version, modality="image")
    assert err.value.status_code == 503 and err.value.code == "index_rebuilding"
    assert enqueued == [("index_rebuild", (fake_version.pk, "image", True))]


def test_version_without_vectors_serves_an_empty_index_not_503(fake_version):
    index = index_for_search(version=fake_version, modality="caption")
    assert index.count == 0 and index.dim == DIM


def _corrupt(path, how, other_file=None):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "bitflip":
        raw = bytearray(data)
        raw[-5] ^= 0x01  # inside the payload (the labels): only the checksum can tell
        path.write_bytes(bytes(raw))
    elif how == "zero-length":
        path.write_bytes(b"")
    elif how == "other-model":
        shutil.copyfile(other_file, path)


@pytest.mark.parametrize("how", ["truncated", "bitflip", "zero-length", "other-model"])
def test_corrupt_file_keeps_last_good_index_serving_and_enqueues_rebuild(fake_version, collection, enqueued, how):
    images, vectors = _images_with_vectors(collection, fake_version, 12)
    other = ModelVersion.objects.create(kind="embedding", name="other", family="fake", dim=DIM)
    store_vector(images[0], other, vectors[0])
    index_rebuild(version=other, modality="image")
    index_rebuild(version=fake_version, modality="image")
    before = _ids_of(search_images(user=collection.owner, terms=[QueryTerm(text="red")], k=12))
    _corrupt(registry.index_path(fake_version.pk, "image"), how, registry.index_path(other.pk, "image"))

    page = search_images(user=collection.owner, terms=[QueryTerm(text="red")], k=12)
    assert _ids_of(page) == before and page.count == 12  # the last good index, not an empty one
    assert ("index_rebuild", (fake_version.pk, "image", True)) in enqueued


@pytest.mark.parametrize("how", ["truncated", "bitflip", "zero-length", "other-model"])
def test_corrupt_file_without_a_good_copy_answers_503_until_the_rebuild_task_ran(
        fake_version, collection, enqueued, how):
    images, vectors = _images_with_vectors(collection, fake_version, 12)
    other = ModelVersion.objects.create(kind="embedding", name="other", family="fake", dim=DIM)
    store_vector(images[0], other, vectors[0])
    index_rebuild(version=other, modality="image")
    index_rebuild(version=fake_version, modality="image")
    path = registry.index_path(fake_version.pk, "image")
    _corrupt(path, how, registry.index_path(other.pk, "image"))
    registry.reset()  # a fresh process: nothing good in memory

    with pytest.raises(IndexRebuilding):
        search_images(user=collection.owner, terms=[QueryTerm(text="red")], k=5)
    assert enqueued == [("index_rebuild", (fake_version.pk, "image", True))]
    assert SearchIndex.objects.get(model_version=fake_version, modality="image").status == "ready"

    tasks.index_rebuild(fake_version.pk, "image", True)  # what the worker runs
    registry.reset()
    page = search_images(user=collection.owner, terms=[QueryTerm(text="red")], k=5)
    assert page.count == 12 and len(page.results) == 5


def test_index_of_another_dimension_is_refused(fake_version, collection, enqueued):
    images, _ = _images_with_vectors(collection, fake_version, 4)
    wide = si.build_index(unit(np.ones((4, 16))), np.array([i.pk for i in images]),
                          model_version_id=str(fake_version.pk), modality="image")
    wide.save(registry.index_path(fake_version.pk, "image"))
    found = registry.lookup(fake_version.pk, "image", DIM)
    assert found.index is None and found.problem == registry.MISMATCH
    with pytest.raises(IndexRebuilding):
        index_for_search(version=fake_version, modality="image")


def test_rebuild_only_if_broken_leaves_a_sound_file_alone(fake_version, collection):
    _images_with_vectors(collection, fake_version, 4)
    index_rebuild(version=fake_version, modality="image")
    sig = registry.file_signature(registry.index_path(fake_version.pk, "image"))
    index_rebuild(version=fake_version, modality="image", only_if_broken=True)
    assert registry.file_signature(registry.index_path(fake_version.pk, "image")) == sig


def test_readers_never_see_a_mixed_or_half_built_index_while_files_are_swapped(settings, tmp_path):
    """Readers search through the registry while a writer replaces the file and publishes
    indexes of two generations (ids 0..199 vs 1000..1199): each answer is wholly one of them."""
    settings.INDEX_DIR = tmp_path / "swap"
    rng = np.random.default_rng(1)
    gens = [si.build_index(unit(rng.standard_normal((200, DIM))), np.arange(200) + off,
                           model_version_id="77", modality="image") for off in (0, 1000)]
    path = registry.index_path(77, "image")
    gens[0].save(path)
    errors: list[BaseException] = []
    seen: set[int] = set()
    stop = threading.Event()

    def reader() -> None:
        q = unit(rng.standard_normal((1, DIM)))
        while not stop.is_set():
            try:
                found = registry.lookup(77, "image", DIM)
                ids = found.index.search(q, 50)[0].ids
                assert len(ids) == 50
                gen = {int(i) // 1000 for i in ids}
                assert len(gen) == 1, f"mixed generations {gen}"
                seen.update(gen)
            except BaseException as exc:  # collected and re-raised in the main thread
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(40):
        gen = gens[i % 2]
        if i % 3:
            gen.save(path)  # readers reload the replaced file
        else:
            registry.publish(77, "image", gen, None)  # an in-process swap
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors[0]
    assert seen <= {0, 1}


def test_vectors_stored_schedules_one_flush_after_commit_and_the_flush_adds_them(
        fake_version, collection, enqueued, django_capture_on_commit_callbacks):
    first = ingest(collection, colour_jpeg((250, 10, 10)), caption="a red square")
    with django_capture_on_commit_callbacks(execute=True):
        encoding.images_encode(image_ids=[first.pk], version=fake_version)
    caption_id = first.captions.get().pk
    assert sorted(enqueued) == [("index_flush", (fake_version.pk, "caption")),
                                ("index_flush", (fake_version.pk, "image"))]
    for name, args in enqueued:
        getattr(tasks, name)(*args)  # what the worker runs
    assert sorted(index_for_search(version=fake_version, modality="image").ids()) == [first.pk]
    assert index_for_search(version=fake_version, modality="caption").ids().tolist() == [caption_id]

    second = ingest(collection, colour_jpeg((10, 10, 250)))
    enqueued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        encoding.images_encode(image_ids=[second.pk], version=fake_version)
    assert ("index_flush", (fake_version.pk, "image")) in enqueued  # nothing waited: a new flush
    tasks.index_flush(fake_version.pk, "image")
    registry.reset()  # another process reads the saved file
    page = search_images(user=collection.owner, terms=[QueryTerm(text="blue")], k=5)
    assert _ids_of(page) == [second.pk, first.pk]


def test_deleting_an_image_enqueues_removal_of_it_and_its_captions(
        fake_version, collection, enqueued, django_capture_on_commit_callbacks):
    images = [ingest(collection, colour_jpeg((200, i * 40, 0)), caption=f"thing {i}") for i in range(3)]
    encoding.images_encode(image_ids=[i.pk for i in images], version=fake_version)
    index_rebuild(version=fake_version, modality="image")
    index_rebuild(version=fake_version, modality="caption")
    gone, gone_caption = images[1].pk, images[1].captions.get().pk
    with django_capture_on_commit_callbacks(execute=True):
        image_delete(image=images[1])
    removals = {args[1]: args[2] for name, args in enqueued if name == "index_remove" and args[0] == fake_version.pk}
    # (a removal buffered by an earlier test's rolled-back transaction may ride along: harmless, the
    # task re-checks the database; see search.receivers._flush_removals)
    assert gone in removals["image"] and gone_caption in removals["caption"]
    for name, args in enqueued:
        getattr(tasks, name)(*args)
    assert gone not in index_for_search(version=fake_version, modality="image").ids()
    assert gone_caption not in index_for_search(version=fake_version, modality="caption").ids()
    assert SearchIndex.objects.get(model_version=fake_version, modality="image").count == 2


def test_deleted_image_is_never_returned_even_before_its_removal_ran(fake_version, collection):
    images, _ = _images_with_vectors(collection, fake_version, 5)
    index_rebuild(version=fake_version, modality="image")
    Image.objects.filter(pk=images[2].pk).delete()  # no removal task has run
    page = search_images(user=collection.owner, terms=[QueryTerm(text="red")], k=10)
    assert images[2].pk not in _ids_of(page) and page.count == 4


def test_index_sync_repairs_missed_adds_and_deletes(fake_version, collection):
    images, vectors = _images_with_vectors(collection, fake_version, 6)
    index_rebuild(version=fake_version, modality="image")
    extra = ingest(collection, colour_jpeg((1, 2, 3)))
    store_vector(extra, fake_version, vectors[0])
    Image.objects.filter(pk=images[0].pk).delete()
    result = index_sync(version=fake_version, modality="image")
    assert (result["added"], result["removed"], result["count"]) == (1, 1, 6)
    registry.reset()
    ids = sorted(index_for_search(version=fake_version, modality="image").ids().tolist())
    assert ids == sorted([i.pk for i in images[1:]] + [extra.pk])


def test_reindex_missing_encodes_images_without_vectors_and_reports_full_coverage(fake_version, collection):
    done = ingest(collection, colour_jpeg((255, 0, 0)), caption="red")
    encoding.images_encode(image_ids=[done.pk], version=fake_version)
    missing = [ingest(collection, colour_jpeg((0, 0, 50 * i + 40)), caption=f"blue {i}") for i in range(3)]
    assert selectors.coverage(version=fake_version)["image_coverage"] == pytest.approx(0.25)
    report = reindex_missing(version=fake_version)
    assert report["encoded_images"] == 3 and report["failed_images"] == 0
    assert report["image_coverage"] == 1.0 and report["caption_coverage"] == 1.0
    assert report["indexes"]["image"]["count"] == 4 and report["indexes"]["caption"]["count"] == 4
    assert set(index_for_search(version=fake_version, modality="image").ids()) == {done.pk, *[m.pk for m in missing]}


def test_reindex_missing_counts_an_unreadable_image_and_encodes_the_rest_in_one_pass(
        fake_version, collection, monkeypatch, settings):
    from pathlib import Path
    from types import SimpleNamespace

    from embeddings import runtime
    from tests.search.conftest import fake_image_features

    forwards: list[int] = []
    monkeypatch.setattr(runtime, "cached_features", REAL_CACHED_FEATURES)  # the real cache and batching
    monkeypatch.setattr(runtime, "image_encoder", lambda *_: SimpleNamespace(identity="stand-in"))
    monkeypatch.setattr(runtime, "image_features",
                        lambda imgs, *_: forwards.append(len(imgs)) or fake_image_features(imgs))
    settings.LOUPE_ENCODE_BATCH = 2
    images = [ingest(collection, colour_jpeg((0, 40 * i + 20, 0)), caption=f"green {i}") for i in range(4)]
    Path(images[1].file.path).write_bytes(b"truncated")
    report = reindex_missing(version=fake_version)
    assert (report["encoded_images"], report["failed_images"]) == (3, 1)
    assert forwards == [1, 2]  # the chunk was not retried image by image
    assert set(index_for_search(version=fake_version, modality="image").ids()) == {
        images[0].pk, images[2].pk, images[3].pk}


def test_build_index_command_builds_both_modalities_and_reports_coverage(fake_version, collection, capsys):
    img = ingest(collection, colour_jpeg((255, 0, 0)), caption="a red thing")
    encoding.images_encode(image_ids=[img.pk], version=fake_version)
    call_command("build_index")
    out = capsys.readouterr().out
    assert f"image index of version {fake_version.pk}: 1 vectors, type flat" in out
    assert f"caption index of version {fake_version.pk}: 1 vectors" in out and "images 1/1 (100.0%)" in out
    call_command("build_index", "--modality", "image", "--model-version", str(fake_version.pk))
    with pytest.raises(CommandError, match="Unknown model version"):
        call_command("build_index", "--model-version", "987654")


def test_generated_caption_vectors_replace_the_old_one_on_edit(fake_version, collection):
    img = ingest(collection, colour_jpeg((255, 0, 0)), caption="red")
    encoding.images_encode(image_ids=[img.pk], version=fake_version)
    index_rebuild(version=fake_version, modality="caption")
    caption = Caption.objects.get(image=img)
    caption.text = "blue"
    caption.save()
    encoding.captions_encode(captions=[caption], version=fake_version, notify=False)
    tasks.index_add(fake_version.pk, "caption", [caption.pk])
    index = index_for_search(version=fake_version, modality="caption")
    blue = np.zeros(DIM, np.float32)
    blue[2] = 1
    hit = index.search(blue[None], 1)[0]
    assert hit.ids.tolist() == [caption.pk] and hit.scores[0] > 0.99 and index.count == 1


def test_other_users_private_collection_is_excluded_from_the_index_allow_list(fake_version, collection, other_user):
    theirs = CollectionFactory(owner=other_user, name="theirs")
    mine, _ = _images_with_vectors(collection, fake_version, 3)
    hidden, _ = _images_with_vectors(theirs, fake_version, 3, seed=5)
    index_rebuild(version=fake_version, modality="image")
    page = search_images(user=collection.owner, terms=[QueryTerm(text="red")], k=10)
    assert set(_ids_of(page)) == {i.pk for i in mine} and page.count == 3


def test_index_config_comes_from_settings_and_unknown_keys_are_an_error(fake_version, collection, settings):
    from search.services.indexes import index_config

    _images_with_vectors(collection, fake_version, 30)
    settings.SEARCH_INDEX_CONFIG = {"flat_max": 10, "hnsw_max": 1000}
    assert (index_config().flat_max, index_config().hnsw_max) == (10, 1000)
    assert index_rebuild(version=fake_version, modality="image").index_type == "hnsw"  # 30 > flat_max
    settings.SEARCH_INDEX_CONFIG = {"flat_max": 10, "hnsw_max": 10, "ivf_nlist": 2}
    assert index_rebuild(version=fake_version, modality="image").index_type == "ivfpq"
    settings.SEARCH_INDEX_CONFIG = {"hnsw_maximum": 5}
    with pytest.raises(ValueError, match="unknown IndexConfig keys"):
        index_config()


def test_many_encodes_inside_the_debounce_make_one_flush_and_one_index_write(
        fake_version, collection, enqueued, django_capture_on_commit_callbacks, monkeypatch):
    """Issue 15, item 3: index updates are batched (a debounced flush), not one task per image."""
    from search.models import PendingIndexItem
    from search.services import indexes

    images = [ingest(collection, colour_jpeg((20 * i, 10, 250 - 20 * i))) for i in range(6)]
    index_rebuild(version=fake_version, modality="image")
    for img in images:  # six encode tasks, as six uploads would run them
        with django_capture_on_commit_callbacks(execute=True):
            encoding.images_encode(image_ids=[img.pk], version=fake_version)
    flushes = [args for name, args in enqueued if name == "index_flush" and args[1] == "image"]
    assert flushes == [(fake_version.pk, "image")]  # the first scheduled it; the rest rode along
    assert sorted(PendingIndexItem.objects.filter(modality="image").values_list("item_id", flat=True)) == \
        sorted(i.pk for i in images)
    writes = []
    real_apply = indexes.index_apply
    monkeypatch.setattr(indexes, "index_apply", lambda **kw: writes.append(sorted(kw["ids"])) or real_apply(**kw))
    result = tasks.index_flush(fake_version.pk, "image")
    assert result["flushed"] == 6 and writes == [sorted(i.pk for i in images)]
    assert not PendingIndexItem.objects.filter(modality="image").exists()
    assert sorted(index_for_search(version=fake_version, modality="image").ids()) == sorted(i.pk for i in images)
    assert tasks.index_flush(fake_version.pk, "image") == {"flushed": 0}  # a duplicate delivery does nothing


def test_a_failed_flush_keeps_its_ids_and_the_periodic_sync_flushes_them(
        fake_version, collection, enqueued, django_capture_on_commit_callbacks, monkeypatch):
    from search.models import PendingIndexItem
    from search.services import indexes

    img = ingest(collection, colour_jpeg((250, 250, 10)))
    index_rebuild(version=fake_version, modality="image")
    with django_capture_on_commit_callbacks(execute=True):
        encoding.images_encode(image_ids=[img.pk], version=fake_version)

    def broken(**kw):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(indexes, "index_apply", broken)
        with pytest.raises(OSError):
            tasks.index_flush(fake_version.pk, "image")
    assert PendingIndexItem.objects.filter(item_id=img.pk).exists()  # nothing lost
    out = tasks.index_sync()  # the beat's repair (also what a lost flush message falls back to)
    assert out["flushed"][f"{fake_version.pk}:image"]["flushed"] == 1
    assert not PendingIndexItem.objects.exists()
    assert img.pk in index_for_search(version=fake_version, modality="image").ids().tolist()


def test_ids_queued_while_a_flush_runs_get_a_flush_of_their_own(fake_version, collection, enqueued, monkeypatch):
    from search.models import PendingIndexItem
    from search.services import indexes

    a, b = (ingest(collection, colour_jpeg(rgb)) for rgb in ((1, 2, 3), (200, 100, 50)))
    index_rebuild(version=fake_version, modality="image")
    for img in (a, b):
        encoding.images_encode(image_ids=[img.pk], version=fake_version)
    PendingIndexItem.objects.all().delete()
    enqueued.clear()
    indexes.index_queue(version_id=fake_version.pk, modality="image", ids=[a.pk])
    real_apply = indexes.index_apply

    def apply_and_meanwhile_queue_b(**kw):
        indexes.index_queue(version_id=fake_version.pk, modality="image", ids=[b.pk])  # arrives mid-flush
        return real_apply(**kw)

    monkeypatch.setattr(indexes, "index_apply", apply_and_meanwhile_queue_b)
    enqueued.clear()
    assert tasks.index_flush(fake_version.pk, "image")["flushed"] == 1
    assert enqueued == [("index_flush", (fake_version.pk, "image"))]  # b waits: another flush is scheduled
    assert list(PendingIndexItem.objects.values_list("item_id", flat=True)) == [b.pk]
