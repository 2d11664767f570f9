"""The admin's retraining flow in a real browser (Chromium via Playwright) with a real worker.

What the retraining issue's "done" names: an admin clicks Retrain, fills the form, watches the
run page's curves move (htmx swaps the live fragment, Chart.js redraws, no page reload), sees
the finished run compared with the active version, promotes it from that page, and search keeps
answering throughout the switch. Encoders are faked (tests/training/fakes.py) so it takes seconds.
"""
from __future__ import annotations

import time

import pytest

from embeddings.models import Collection, ModelVersion
from tests.factories import UserFactory
from training.models import ModelSwitch, TrainingRun

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def admin_login(page, username: str) -> None:
    page.goto(page.base + "/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw-not-secret")
    page.click("input[type=submit][value='Log in']")
    page.wait_for_url(page.base + "/admin/")


def chart_points(page, canvas_id: str) -> int:
    return page.evaluate(f"""() => {{
        const chart = window.Chart && Chart.getChart(document.getElementById("{canvas_id}"));
        return chart ? chart.data.labels.length : -1;
    }}""")


def test_retrain_watch_compare_promote_while_searching(page, tiny_collection, start_worker, monkeypatch):
    from tests.training.fakes import install_fake_runtime

    install_fake_runtime(monkeypatch.setattr)  # the live server (this process) searches with the fakes too
    Collection.objects.filter(pk=tiny_collection.pk).update(is_public=True)
    start_worker(app="tests.training.worker_app", LOUPE_TEST_EPOCH_PAUSE="0.5")  # >= 10 s of visible progress
    UserFactory(username="root", is_staff=True, is_superuser=True)
    old = ModelVersion.objects.get(kind="embedding", status="active")

    admin_login(page, "root")
    page.goto(page.base + "/admin/training/trainingrun/")
    page.click("text=Retrain embedding")
    page.wait_for_selector("input[name=loop__epochs]")
    page.check(f"input[name=collections][value=\"{tiny_collection.pk}\"]")
    for name, value in {"loop__epochs": "20", "loop__batch_size": "4", "loop__warmup_steps": "0",
                        "loop__patience": "0", "model__dim": "400"}.items():
        page.fill(f"input[name={name}]", value)
    page.fill("textarea[name=extra]",
              "model.joint_dim=16\nmodel.gate_centroids=2\nmodel.hidden=32\nloop.log_every_steps=1")
    page.click("input[type=submit][value='Start training']")

    page.wait_for_selector("#run-live, .errornote, .errorlist")
    assert page.locator(".errornote, .errorlist").count() == 0, page.inner_text("#content")
    run = TrainingRun.objects.get()
    assert page.url.rstrip("/").endswith(f"/admin/training/trainingrun/{run.pk}/change")
    page.evaluate("window.__noReload = true")
    seen_points: set[int] = set()
    deadline = time.monotonic() + 180
    while "succeeded" not in page.inner_text("#run-live .training-status"):
        assert time.monotonic() < deadline, TrainingRun.objects.get(pk=run.pk).log_tail
        assert "failed" not in page.inner_text("#run-live .training-status"), TrainingRun.objects.get(pk=run.pk).error
        seen_points.add(chart_points(page, "chart-loss"))
        page.wait_for_timeout(300)
    page.wait_for_function("() => Chart.getChart(document.getElementById('chart-dev')).data.labels.length === 20")
    assert chart_points(page, "chart-loss") == 20
    assert len({n for n in seen_points if 0 < n < 20}) >= 2, seen_points  # the curves grew in place...
    assert page.evaluate("window.__noReload") is True  # ...by htmx swaps, not reloads
    live = page.text_content("#run-live")  # (inner_text would follow the admin CSS upper-casing)
    assert "this run vs the active version" in live and f"Active ({old.name})" in live

    candidate = TrainingRun.objects.get(pk=run.pk).model_version
    page.click(f"text=Promote {candidate.name}")
    # measured on the tiny collection's dev images: the admin asks first, showing both sets' figures
    page.wait_for_selector("text=Promote anyway")
    assert "fewer than 100" in page.text_content("#content-main") and not ModelSwitch.objects.exists()
    page.click("text=Promote anyway")
    page.wait_for_url("**/admin/embeddings/modelversion/")
    statuses, versions = [], []
    deadline = time.monotonic() + 180
    while True:
        switch = ModelSwitch.objects.order_by("-pk").first()
        if switch.status in ("succeeded", "failed"):
            break
        assert time.monotonic() < deadline, switch.status
        response = page.request.get(page.base + "/api/v1/search/?q=a+dog&k=3")
        statuses.append(response.status)
        if response.status == 200:
            versions.append(response.json()["model_version"])
        time.sleep(0.1)
    assert switch.status == "succeeded", switch.error
    assert set(statuses) <= {200, 503}, statuses  # never an error page while the switch runs
    assert versions == sorted(versions, key=lambda v: v == candidate.pk)  # old ... then new, never back
    final = page.request.get(page.base + "/api/v1/search/?q=a+dog&k=3")
    assert final.status == 200 and final.json()["model_version"] == candidate.pk
    assert ModelVersion.objects.get(kind="embedding", status="active") == candidate
    page.goto(page.base + f"/admin/embeddings/modelversion/{candidate.pk}/change/")
    assert f"Roll back to {old.name}" in page.content()
