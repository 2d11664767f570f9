"""Promotion and roll-back: vectors for every image, index beside the active one, atomic flip;
searches answer from the old version until the flip and never mix versions."""
from __future__ import annotations

import numpy as np
import pytest

from embeddings.encoding import images_encode
from embeddings.models import Caption, Image, ImageEmbedding, ModelVersion
from project.exceptions import ApplicationError, Conflict
from search.services.indexes import index_rebuild
from search.services.queries import QueryTerm
from search.services.search import search_images
from tests.factories import UserFactory
from tests.training.conftest import TINY_CAPTIONER, TINY_EMBEDDING
from tests.training.fakes import install_fake_runtime
from training import services
from training.models import ModelSwitch
from training.services import promotion

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fake_runtime(monkeypatch, fake_encoders, settings):
    install_fake_runtime(monkeypatch.setattr)
    settings.LOUPE_PROMOTION_CHUNK = 5  # 12 images -> 3 chunks


@pytest.fixture
def searchable(tiny_collection, fake_runtime, conse_v0):
    """The tiny collection encoded and indexed with ConSE v0, as after normal processing."""
    ids = list(Image.objects.values_list("pk", flat=True))
    images_encode(image_ids=ids, version=conse_v0)
    for modality in ("image", "caption"):
        index_rebuild(version=conse_v0, modality=modality)
    return tiny_collection


def trained(kind="embedding", config=TINY_EMBEDDING, collection=None):
    from embeddings.models import Collection

    run = services.training_run_start(kind=kind, collections=[collection or Collection.objects.get(name="tiny")],
                                      config_overrides=config, user=None, enqueue=False)
    run = services.training_run_execute(run.pk)
    assert run.status == "succeeded", run.error
    return run.model_version


def search(user):
    return search_images(user=user, terms=[QueryTerm(text="a dog near a cat")], k=5)


def test_promotion_switches_atomically_while_searches_keep_answering(searchable, conse_v0):
    admin = UserFactory(is_staff=True)
    candidate = trained()
    switch = promotion.model_version_promote(version=candidate, user=admin, background=False, force=True)
    assert switch.status == "succeeded" and switch.done == switch.total == 12 and switch.chunks_total == 3
    candidate.refresh_from_db()
    conse_v0.refresh_from_db()
    assert candidate.status == "active" and conse_v0.status == "retired" and candidate.promoted_at
    assert ImageEmbedding.objects.filter(model_version=candidate).count() == 12
    page = search(admin)
    assert page.model_version_id == candidate.pk and len(page.results) == 5


def test_searches_use_the_old_version_until_the_flip(searchable, conse_v0):
    admin = UserFactory(is_staff=True)
    candidate = trained()
    before = search(admin)
    switch = promotion.model_version_promote(version=candidate, background=True, force=True)  # tasks not run here
    switch = promotion.switch_start(switch_id=switch.pk, fan_out=False)
    assert switch.status == "encoding"
    ids = list(Image.objects.order_by("pk").values_list("pk", flat=True))
    for i in range(0, len(ids), 5):
        promotion.switch_encode_chunk(switch_id=switch.pk, image_ids=ids[i:i + 5], chain=False)
        page = search(admin)  # mid-promotion: still the old version, same answer
        assert page.model_version_id == conse_v0.pk
        assert [h.image.pk for h in page.results] == [h.image.pk for h in before.results]
    assert ModelSwitch.objects.get(pk=switch.pk).status == "indexing"
    with pytest.raises(Conflict):  # one switch per kind at a time
        promotion.model_version_promote(version=candidate, force=True)
    promotion.switch_finish(switch_id=switch.pk, chain=False)
    assert search(admin).model_version_id == candidate.pk


def test_a_failing_chunk_leaves_the_old_version_active(searchable, conse_v0, monkeypatch):
    from embeddings import encoding

    candidate = trained()

    def broken(**kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(encoding, "images_encode", broken)
    with pytest.raises(OSError):
        promotion.model_version_promote(version=candidate, background=False, force=True)
    switch = ModelSwitch.objects.get(version=candidate)
    assert switch.status == "failed" and "disk on fire" in switch.error
    assert ModelVersion.objects.get(kind="embedding", status="active") == conse_v0
    assert search(UserFactory(is_staff=True)).model_version_id == conse_v0.pk


def test_rollback_restores_the_previous_version(searchable, conse_v0):
    candidate = trained()
    promotion.model_version_promote(version=candidate, background=False, force=True)
    with pytest.raises(Conflict):
        promotion.model_version_rollback(version=conse_v0)  # not the active one
    switch = promotion.model_version_rollback(version=candidate, background=False)
    assert switch.action == "rollback" and switch.status == "succeeded" and switch.version == conse_v0
    conse_v0.refresh_from_db()
    candidate.refresh_from_db()
    assert conse_v0.status == "active" and candidate.status == "retired"
    assert search(UserFactory(is_staff=True)).model_version_id == conse_v0.pk


def test_rollback_without_a_previous_version_is_refused(conse_v0):
    with pytest.raises(ApplicationError, match="no previous version"):
        promotion.model_version_rollback(version=conse_v0)


def test_promoting_a_captioner_regenerates_generated_captions_only(searchable):
    first = trained("captioner", TINY_CAPTIONER)
    promotion.model_version_promote(version=first, background=False, force=True)
    generated = Caption.objects.filter(source="generated")
    assert generated.count() == 12 and set(generated.values_list("model_version", flat=True)) == {first.pk}
    human_before = sorted(Caption.objects.exclude(source="generated").values_list("pk", "text"))
    second = trained("captioner", {**TINY_CAPTIONER, "loop": {**TINY_CAPTIONER["loop"], "seed": 7}})
    switch = promotion.model_version_promote(version=second, background=False, force=True)
    assert switch.status == "succeeded"
    generated = Caption.objects.filter(source="generated")
    assert generated.count() == 12 and set(generated.values_list("model_version", flat=True)) == {second.pk}
    assert sorted(Caption.objects.exclude(source="generated").values_list("pk", "text")) == human_before
    assert ModelVersion.objects.get(kind="captioner", status="active") == second


def test_auto_promotion_only_when_the_candidate_beats_the_active_by_the_margin(settings):
    settings.LOUPE_AUTO_PROMOTE = True
    settings.LOUPE_PROMOTE_MARGIN = {"embedding": 2.0}
    v = ModelVersion(kind="embedding", metrics={
        "dev": {"i2t_r1": 30.0, "t2i_r1": 20.0}, "compared_with": {"dev": {"i2t_r1": 24.0, "t2i_r1": 22.0}}})
    assert promotion.should_auto_promote(v)  # 25.0 >= 23.0 + 2
    v.metrics["compared_with"]["dev"]["t2i_r1"] = 23.0  # 25.0 < 23.5 + 2
    assert not promotion.should_auto_promote(v)
    settings.LOUPE_AUTO_PROMOTE = False
    v.metrics["compared_with"]["dev"]["t2i_r1"] = 0.0
    assert not promotion.should_auto_promote(v)
    assert np.isclose(promotion.primary_metric("embedding", {"i2t_r1": 1.0, "t2i_r1": 2.0}), 1.5)
