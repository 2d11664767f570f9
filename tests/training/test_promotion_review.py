"""Promotion asks before a regrettable switch: a candidate worse than the active version on an
evaluation set, one measured on a tiny set, or one never measured. Issue 16, item 4."""
import pytest
from django.test import Client
from rest_framework.test import APIClient

from embeddings.models import ModelVersion
from training.models import ModelSwitch
from training.services import promotion
from tests.factories import ModelVersionFactory, UserFactory

pytestmark = pytest.mark.django_db


def sized(t2i, i2t, images=1000, ood=None):
    """Metrics as a training run records them (dev, with optional ood_* keys, and set sizes)."""
    dev = {"t2i_r1": t2i, "i2t_r1": i2t}
    data = {"dev_images": images, "dev_captions": images * 5}
    if ood is not None:
        dev |= {"ood_t2i_r1": ood[0], "ood_i2t_r1": ood[1]}
        data |= {"ood_images": ood[2], "ood_captions": ood[2]}
    return {"dev": dev, "data": data}


@pytest.fixture
def active(db):
    ModelVersion.objects.filter(kind="embedding", status="active").update(status="retired")
    return ModelVersionFactory(name="active-one", status="active", directory="x", family="joint",
                               metrics=sized(31.0, 32.8, ood=(10.0, 12.0, 300)))


@pytest.fixture
def staff_api():
    client = APIClient()
    client.force_authenticate(UserFactory(is_staff=True))
    return client


def test_a_worse_candidate_needs_force_and_the_refusal_changes_nothing(staff_api, active):
    worse = ModelVersionFactory(directory="y", family="joint", metrics=sized(27.0, 28.8, ood=(12.0, 13.0, 300)))
    resp = staff_api.post(f"/api/v1/models/{worse.pk}/promote/", {}, format="json")
    assert resp.status_code == 409
    err = resp.json()["error"]
    assert err["code"] == "needs_confirmation"
    assert err["fields"]["force"] == ["Worse than the active active-one on in-domain dev: 27.90 vs 31.90."]
    assert not ModelSwitch.objects.exists()
    forced = staff_api.post(f"/api/v1/models/{worse.pk}/promote/", {"force": True}, format="json")
    assert forced.status_code == 202 and ModelSwitch.objects.get().version == worse


def test_the_review_lists_candidate_and_active_on_each_set_with_sizes(staff_api, active):
    better = ModelVersionFactory(directory="y", family="joint", metrics=sized(33.0, 35.0, ood=(11.0, 13.0, 300)))
    review = staff_api.get(f"/api/v1/models/{better.pk}/review/").json()
    assert review["active"] == {"id": active.pk, "name": "active-one"}
    assert review["sets"] == [
        {"set": "in_domain", "label": "in-domain dev", "candidate": 34.0, "active": 31.9, "images": 1000,
         "captions": 5000},
        {"set": "ood", "label": "out-of-domain dev", "candidate": 12.0, "active": 11.0, "images": 300,
         "captions": 300},
    ]
    assert review["warnings"] == []
    assert staff_api.post(f"/api/v1/models/{better.pk}/promote/", {}, format="json").status_code == 202


def test_better_in_domain_but_worse_out_of_domain_still_asks(active):
    mixed = ModelVersionFactory(directory="y", family="joint", metrics=sized(40.0, 40.0, ood=(2.0, 2.0, 300)))
    codes = [w["code"] for w in promotion.promotion_review(mixed)["warnings"]]
    assert codes == ["worse"]
    with pytest.raises(promotion.NeedsConfirmation):
        promotion.model_version_promote(version=mixed)


def test_a_score_on_one_dev_image_asks_even_when_it_reads_100(active):
    demo = ModelVersionFactory(directory="y", family="joint", metrics=sized(100.0, 100.0, images=1))
    warnings = promotion.promotion_review(demo)["warnings"]
    assert [w["code"] for w in warnings] == ["tiny"]
    assert "only 1 in-domain dev image (fewer than 100)" in warnings[0]["message"]


def test_a_never_measured_candidate_asks_and_the_first_measured_one_does_not(db):
    ModelVersion.objects.filter(kind="embedding").delete()
    unmeasured = ModelVersionFactory(directory="y", family="joint", metrics={})
    assert [w["code"] for w in promotion.promotion_review(unmeasured)["warnings"]] == ["unmeasured"]
    first = ModelVersionFactory(directory="z", family="joint", metrics=sized(20.0, 20.0))
    assert promotion.promotion_review(first)["warnings"] == []  # nothing active to be worse than


def test_the_active_figures_come_from_the_candidates_own_run_when_it_scored_that_version(active):
    candidate = ModelVersionFactory(directory="y", family="joint", metrics={
        **sized(30.0, 30.0), "compared_with": {"version": active.pk, "dev": {"t2i_r1": 29.0, "i2t_r1": 29.0}}})
    review = promotion.promotion_review(candidate)
    assert review["sets"][0]["active"] == 29.0 and review["warnings"] == []  # same split: 30 > 29


def test_rollback_never_asks(active):
    previous = ModelVersionFactory(directory="y", family="joint", status="retired", metrics=sized(1.0, 1.0, images=2))
    ModelVersion.objects.filter(pk=active.pk).update(parent=previous)
    switch = promotion.model_version_rollback(version=active)
    assert switch.action == "rollback" and switch.version == previous


def test_the_admin_asks_on_a_confirmation_page_and_promote_anyway_promotes(active):
    worse = ModelVersionFactory(directory="y", family="joint", metrics=sized(27.0, 28.8))
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    change = client.get(f"/admin/embeddings/modelversion/{worse.pk}/change/").content.decode()
    assert "27.90" in change and "31.90" in change and "1000 images, 5000 captions" in change
    page = client.post(f"/admin/embeddings/modelversion/{worse.pk}/promote/")
    assert page.status_code == 200 and not ModelSwitch.objects.exists()
    html = page.content.decode()
    assert "Promote anyway" in html and "Worse than the active active-one" in html
    done = client.post(f"/admin/embeddings/modelversion/{worse.pk}/promote/", {"force": "1"})
    assert done.status_code == 302 and ModelSwitch.objects.get().version == worse


def test_the_admin_list_action_sends_a_risky_promotion_to_the_version_page(active):
    worse = ModelVersionFactory(directory="y", family="joint", metrics=sized(27.0, 28.8))
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    resp = client.post("/admin/embeddings/modelversion/", {"action": "promote_version", "_selected_action": [worse.pk]})
    assert resp.status_code == 302 and resp["Location"].endswith(f"/modelversion/{worse.pk}/change/")
    assert not ModelSwitch.objects.exists()
