"""Promotion and roll-back of model versions without downtime.

Embedding: every image is encoded into the target version's vectors by chunked tasks (any
number of gpu workers share them; a chunk is idempotent because vectors are upserted, and
"what is left" is simply the images without a vector of that version, so a stalled switch is
resumed by planning again), the target's indexes are built beside the active ones, and then
the statuses flip in one transaction. Searches resolve the active version once per request,
so they answer from the old version until the flip and from the new one after it; any
failure leaves the old version active.

Captioner: the statuses flip at once (new uploads get the new captioner), then the generated
captions of every image are regenerated in the background; human and imported captions are
never touched.

Promotion asks before doing something a person would regret (`promotion_review`): a candidate
worse than the active version on any evaluation set they share, one measured on a tiny set
(fewer than LOUPE_PROMOTE_MIN_EVAL_IMAGES images), or one never measured, is refused with
`needs_confirmation` (409) unless the caller passes `force=True` after showing the comparison.
Roll-back restores a version that served before, so it never asks.

Paragraph vectors: only the statuses flip (a version holds the vectors of the images it was
trained for, so there is nothing to encode); roll-back is the same flip back.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from embeddings.models import Caption, Image, ModelVersion
from project import queueing
from project.exceptions import ApplicationError, Conflict
from training.models import ModelSwitch
from training.selectors import primary_metric

logger = logging.getLogger(__name__)

_SETS = (("in_domain", "in-domain dev"), ("ood", "out-of-domain dev"))


class NeedsConfirmation(Conflict):
    """The candidate is worse, unmeasured or measured on a tiny set: promote it only with force."""

    code = "needs_confirmation"

    def __init__(self, message: str, review: dict[str, Any]) -> None:
        super().__init__(message, code="needs_confirmation",
                         fields={"force": [w["message"] for w in review["warnings"]]})
        self.review = review  # promotion_review's answer: what a confirmation page shows


def _score(kind: str, metrics: dict[str, Any] | None) -> float | None:
    """The set's comparable score: the kind's primary metric, else text->image R@1 (a set with
    one sentence per image may report only that direction)."""
    if not metrics:
        return None
    value = primary_metric(kind, metrics)
    if value is None and kind == ModelVersion.Kind.EMBEDDING and "t2i_r1" in metrics:
        value = float(metrics["t2i_r1"])
    return value


def _active_sets(version: ModelVersion, active: ModelVersion) -> dict[str, dict[str, Any] | None]:
    """The active version's entries: what the candidate's run measured it at on the same split
    (`compared_with`) when that was this active version, else its own recorded figures."""
    from training.services.evaluation import evaluation_set

    baseline = (version.metrics or {}).get("compared_with") or {}
    dev = baseline.get("dev") or {}
    if baseline.get("version") == active.pk and dev:
        return {"in_domain": {"metrics": {k: v for k, v in dev.items() if not k.startswith("ood_")}},
                "ood": ({"metrics": {k[4:]: v for k, v in dev.items() if k.startswith("ood_")}}
                        if any(k.startswith("ood_") for k in dev) else None)}
    return {which: evaluation_set(active, which) for which, _ in _SETS}


def promotion_review(version: ModelVersion) -> dict[str, Any]:
    """Candidate against the active version on each evaluation set, with the set sizes, and the
    reasons (if any) to ask before promoting: {"active", "sets": [...], "warnings": [...]}."""
    from training.services.evaluation import evaluation_set

    active = ModelVersion.objects.active(version.kind).exclude(pk=version.pk).first()
    theirs = _active_sets(version, active) if active is not None else {}
    minimum = int(settings.LOUPE_PROMOTE_MIN_EVAL_IMAGES)
    sets, warnings = [], []
    for which, label in _SETS:
        mine = evaluation_set(version, which)
        other = theirs.get(which)
        cand = _score(version.kind, (mine or {}).get("metrics"))
        act = _score(version.kind, (other or {}).get("metrics"))
        images = (mine or {}).get("images")
        if cand is None and act is None:
            continue
        sets.append({"set": which, "label": label, "candidate": cand, "active": act, "images": images,
                     "captions": (mine or {}).get("captions")})
        if cand is not None and act is not None and cand < act:
            warnings.append({"code": "worse", "message": (
                f"Worse than the active {active.name if active else ''} on {label}: {cand:.2f} vs {act:.2f}.")})
        if cand is not None and images is not None and int(images) < minimum:
            warnings.append({"code": "tiny", "message": (
                f"Measured on only {images} {label} image{'s' if images != 1 else ''} "
                f"(fewer than {minimum}): its score says little.")})
    if version.family != ModelVersion.Family.CONSE and not any(r["candidate"] is not None for r in sets):
        warnings.append({"code": "unmeasured", "message": "Never measured on an evaluation set."})
    return {"active": {"id": active.pk, "name": active.name} if active else None,
            "metric": "R@1, mean of both directions" if version.kind == ModelVersion.Kind.EMBEDDING else "CIDEr-D",
            "sets": sets, "warnings": warnings}


def chunk_size() -> int:
    return int(settings.LOUPE_PROMOTION_CHUNK)


def should_auto_promote(version: ModelVersion) -> bool:
    """LOUPE_AUTO_PROMOTE is on and the candidate beats the active version's dev score (on the
    same dev split) by LOUPE_PROMOTE_MARGIN points (a number, or {kind: number})."""
    if not settings.LOUPE_AUTO_PROMOTE:
        return False
    margin = settings.LOUPE_PROMOTE_MARGIN
    margin = float(margin.get(version.kind, 1.0) if isinstance(margin, dict) else margin)
    mine = primary_metric(version.kind, (version.metrics or {}).get("dev", {}))
    other = (version.metrics or {}).get("compared_with") or {}
    if mine is None:
        return False
    if not other:  # nothing active to beat
        return True
    theirs = primary_metric(version.kind, other.get("dev") or {})
    return theirs is not None and mine >= theirs + margin


# --- starting -------------------------------------------------------------------------------
def _publish_now(task_name: str, *args: Any) -> bool:
    return queueing.publish(f"training.tasks.{task_name}", *args, queue="gpu")


def enqueue(task_name: str, *args: Any) -> None:
    """A training task by its short name, after commit (the reaper resumes stalled switches)."""
    queueing.enqueue(f"training.tasks.{task_name}", *args, queue="gpu")


def model_version_promote(*, version: ModelVersion, user: Any = None, action: str = ModelSwitch.Action.PROMOTE,
                          background: bool = True, force: bool = False) -> ModelSwitch:
    """Make `version` the active one of its kind: in the background by default (gpu-queue
    tasks), or in this process with `background=False` (management commands). A promotion that
    `promotion_review` warns about raises NeedsConfirmation unless `force`."""
    version.refresh_from_db()
    if version.status == ModelVersion.Status.ACTIVE:
        raise Conflict(f"{version.name} is already the active {version.kind} model.", code="already_active")
    if version.family != ModelVersion.Family.CONSE and not version.directory:
        raise ApplicationError(f"{version.name} has no model files.")
    if action == ModelSwitch.Action.PROMOTE and not force:
        review = promotion_review(version)
        if review["warnings"]:
            raise NeedsConfirmation(f"Promoting {version.name} needs confirmation: "
                                    + " ".join(w["message"] for w in review["warnings"])
                                    + " Pass force to promote anyway.", review)
    previous = ModelVersion.objects.active(version.kind).first()
    try:
        with transaction.atomic():
            switch = ModelSwitch.objects.create(
                kind=version.kind, action=action, version=version, previous=previous,
                created_by=user if getattr(user, "pk", None) else None, heartbeat_at=timezone.now())
            if background:
                enqueue("switch_start", switch.pk)
    except IntegrityError as exc:
        raise Conflict(f"A {version.kind} promotion is already in progress.", code="switch_in_progress") from exc
    logger.info("%s of %s v%s started (switch %s)", action, version.kind, version.pk, switch.pk)
    return switch if background else switch_run_inline(switch)


def rollback_target(version: ModelVersion) -> ModelVersion | None:
    """The version that was active before `version` became active."""
    last = (ModelSwitch.objects.filter(version=version, status=ModelSwitch.Status.SUCCEEDED)
            .exclude(previous=None).order_by("-switched_at").first())
    if last is not None:
        return last.previous
    return version.parent


def model_version_rollback(*, version: ModelVersion, user: Any = None, background: bool = True) -> ModelSwitch:
    """Undo the promotion of the active `version`: restore the version active before it."""
    version.refresh_from_db()
    if version.status != ModelVersion.Status.ACTIVE:
        raise Conflict(f"{version.name} is not the active {version.kind} model; only that can be rolled back.",
                       code="not_active")
    target = rollback_target(version)
    if target is None:
        raise ApplicationError(f"{version.name} has no previous version to roll back to.")
    return model_version_promote(version=target, user=user, action=ModelSwitch.Action.ROLLBACK,
                                 background=background)


# --- background steps (called by training.tasks) ---------------------------------------------
def _images() -> Any:
    return Image.objects.exclude(status=Image.Status.FAILED)


def _missing_vectors(switch: ModelSwitch, upto: int | None = None) -> Any:
    qs = _images().exclude(embeddings__model_version_id=switch.version_id)
    return qs.filter(pk__lte=upto) if upto is not None else qs


def _missing_captions(switch: ModelSwitch) -> Any:
    return _images().filter(pk__lte=switch.max_image_id).exclude(captions__model_version_id=switch.version_id)


def _plan(switch: ModelSwitch, ids: Sequence[int], task_name: str, fan_out: bool) -> int:
    size = chunk_size()
    chunks = [list(ids[i:i + size]) for i in range(0, len(ids), size)]
    for chunk in chunks if fan_out else []:
        enqueue(task_name, switch.pk, chunk)
    return len(chunks)


def switch_start(*, switch_id: int, fan_out: bool = True) -> ModelSwitch:
    """Plan the chunks (embedding) or flip then plan (captioner)."""
    with transaction.atomic():
        switch = ModelSwitch.objects.select_for_update().select_related("version").get(pk=switch_id)
        if switch.status != ModelSwitch.Status.QUEUED:
            return switch  # duplicate delivery
        switch.max_image_id = _images().order_by("-pk").values_list("pk", flat=True).first() or 0
        switch.total = _images().filter(pk__lte=switch.max_image_id).count()
        if switch.kind == ModelVersion.Kind.EMBEDDING:
            todo = list(_missing_vectors(switch, switch.max_image_id).order_by("pk").values_list("pk", flat=True))
            switch.status = ModelSwitch.Status.ENCODING
            switch.done = switch.total - len(todo)
            switch.chunks_total = _plan(switch, todo, "switch_encode_chunk", fan_out)
            if not todo:
                switch.status = ModelSwitch.Status.INDEXING
                if fan_out:
                    enqueue("switch_finish", switch.pk)
        elif switch.kind == ModelVersion.Kind.PARAGRAPH:
            # A paragraph version carries its own image vectors: switching is the status flip alone.
            _flip(switch)
            switch.status, switch.done, switch.finished_at = ModelSwitch.Status.SUCCEEDED, switch.total, timezone.now()
        else:
            _flip(switch)
            todo = list(_missing_captions(switch).order_by("pk").values_list("pk", flat=True))
            switch.status = ModelSwitch.Status.CAPTIONING if todo else ModelSwitch.Status.SUCCEEDED
            switch.done = switch.total - len(todo)
            switch.chunks_total = _plan(switch, todo, "switch_caption_chunk", fan_out)
            switch.finished_at = None if todo else timezone.now()
        switch.heartbeat_at = timezone.now()
        switch.save()
    return switch


def switch_encode_chunk(*, switch_id: int, image_ids: Sequence[int], chain: bool = True) -> int:
    """Store the target version's vectors for these images; the last chunk starts the finish."""
    from embeddings.encoding import images_encode
    from search.receivers import suppressed

    switch = ModelSwitch.objects.select_related("version").get(pk=switch_id)
    if switch.status != ModelSwitch.Status.ENCODING:
        return 0
    todo = list(_missing_vectors(switch).filter(pk__in=image_ids).values_list("pk", flat=True))
    try:
        with suppressed():  # the whole index is built once at the end
            n = images_encode(image_ids=todo, version=switch.version) if todo else 0
    except Exception as exc:  # the old version stays active; the error is shown on the switch
        _fail(switch_id, exc)
        raise
    left = _missing_vectors(switch, switch.max_image_id).count()
    ModelSwitch.objects.filter(pk=switch_id).update(
        chunks_done=F("chunks_done") + 1, done=switch.total - left, heartbeat_at=timezone.now())
    if left == 0 and ModelSwitch.objects.filter(pk=switch_id, status=ModelSwitch.Status.ENCODING).update(
            status=ModelSwitch.Status.INDEXING) and chain:
        _publish_now("switch_finish", switch_id)  # exactly one chunk wins this update
    return n


def index_build_for(version: ModelVersion) -> None:
    """Build the version's image and caption indexes beside the active ones (search app)."""
    from search.services.indexes import index_rebuild

    for modality in ("image", "caption"):
        index_rebuild(version=version, modality=modality)


def switch_finish(*, switch_id: int, chain: bool = True) -> ModelSwitch:
    """Catch up late uploads, build the indexes, then flip the statuses in one transaction."""
    from embeddings.encoding import images_encode
    from search.receivers import suppressed

    switch = ModelSwitch.objects.select_related("version").get(pk=switch_id)
    if switch.status != ModelSwitch.Status.INDEXING:
        return switch
    try:
        late = list(_missing_vectors(switch).values_list("pk", flat=True))
        with suppressed():
            for i in range(0, len(late), chunk_size()):
                images_encode(image_ids=late[i:i + chunk_size()], version=switch.version)
        index_build_for(switch.version)
        with transaction.atomic():
            locked = ModelSwitch.objects.select_for_update().get(pk=switch_id)
            if locked.status != ModelSwitch.Status.INDEXING:
                return locked
            _flip(locked)
            locked.status, locked.finished_at = ModelSwitch.Status.SUCCEEDED, timezone.now()
            locked.done = locked.total
            locked.save()
            if chain:  # images processed by the old version between the catch-up and the flip
                enqueue("switch_catch_up", switch_id)
    except Exception as exc:  # the old version stays active
        _fail(switch_id, exc)
        raise
    return ModelSwitch.objects.get(pk=switch_id)


def switch_catch_up(*, switch_id: int) -> int:
    """After a flip: vectors of the (now active) version for images that still lack one."""
    from embeddings.encoding import images_encode

    switch = ModelSwitch.objects.select_related("version").get(pk=switch_id)
    if switch.version.status != ModelVersion.Status.ACTIVE:
        return 0
    late = list(_missing_vectors(switch).values_list("pk", flat=True))
    for i in range(0, len(late), chunk_size()):
        images_encode(image_ids=late[i:i + chunk_size()], version=switch.version)
    return len(late)


def _flip(switch: ModelSwitch) -> None:
    """Retire the active version and activate the target (inside the caller's transaction)."""
    now = timezone.now()
    ModelVersion.objects.filter(kind=switch.kind, status=ModelVersion.Status.ACTIVE).exclude(
        pk=switch.version_id).update(status=ModelVersion.Status.RETIRED)
    ModelVersion.objects.filter(pk=switch.version_id).update(status=ModelVersion.Status.ACTIVE, promoted_at=now)
    switch.switched_at = now
    logger.info("%s model switched to v%s", switch.kind, switch.version_id)


def switch_caption_chunk(*, switch_id: int, image_ids: Sequence[int]) -> int:
    """Regenerate these images' generated captions with the (active) target captioner."""
    from embeddings.encoding import images_caption

    switch = ModelSwitch.objects.select_related("version").get(pk=switch_id)
    if switch.status != ModelSwitch.Status.CAPTIONING or switch.version.status != ModelVersion.Status.ACTIVE:
        return 0
    try:
        with transaction.atomic():
            n = images_caption(image_ids=list(image_ids), version=switch.version)  # its tuned decoding
            done = Caption.objects.filter(image_id__in=image_ids, model_version=switch.version).values("image_id")
            Caption.objects.filter(image_id__in=done, source=Caption.Source.GENERATED).exclude(
                model_version=switch.version).delete()
    except Exception as exc:
        _fail(switch_id, exc, keep_status=True)
        raise
    left = _missing_captions(switch).count()
    ModelSwitch.objects.filter(pk=switch_id).update(
        chunks_done=F("chunks_done") + 1, done=switch.total - left, heartbeat_at=timezone.now())
    if left == 0:
        ModelSwitch.objects.filter(pk=switch_id, status=ModelSwitch.Status.CAPTIONING).update(
            status=ModelSwitch.Status.SUCCEEDED, finished_at=timezone.now())
    return n


def _fail(switch_id: int, exc: BaseException, *, keep_status: bool = False) -> None:
    logger.error("switch %s failed: %s", switch_id, exc)
    fields: dict[str, Any] = {"error": f"{type(exc).__name__}: {exc}"[:4000]}
    if not keep_status:
        fields.update(status=ModelSwitch.Status.FAILED, finished_at=timezone.now())
    ModelSwitch.objects.filter(pk=switch_id).exclude(status=ModelSwitch.Status.SUCCEEDED).update(**fields)


def switches_resume(*, now=None) -> int:
    """Periodic: re-plan switches whose chunks stopped moving (a worker died, a message was lost)."""
    now = now or timezone.now()
    stalled = now - timedelta(seconds=float(settings.LOUPE_SWITCH_STALL_S))
    n = 0
    for switch in ModelSwitch.objects.filter(status__in=[ModelSwitch.Status.ENCODING, ModelSwitch.Status.INDEXING,
                                                         ModelSwitch.Status.CAPTIONING], heartbeat_at__lt=stalled):
        ModelSwitch.objects.filter(pk=switch.pk).update(heartbeat_at=now)
        if switch.status == ModelSwitch.Status.ENCODING:
            todo = list(_missing_vectors(switch, switch.max_image_id).order_by("pk").values_list("pk", flat=True))
            if todo:
                for i in range(0, len(todo), chunk_size()):
                    _publish_now("switch_encode_chunk", switch.pk, todo[i:i + chunk_size()])
            elif ModelSwitch.objects.filter(pk=switch.pk, status=ModelSwitch.Status.ENCODING).update(
                    status=ModelSwitch.Status.INDEXING):
                _publish_now("switch_finish", switch.pk)
        elif switch.status == ModelSwitch.Status.INDEXING:
            _publish_now("switch_finish", switch.pk)
        else:
            todo = list(_missing_captions(switch).order_by("pk").values_list("pk", flat=True))
            for i in range(0, len(todo), chunk_size()):
                _publish_now("switch_caption_chunk", switch.pk, todo[i:i + chunk_size()])
        n += 1
    return n


def switch_run_inline(switch: ModelSwitch) -> ModelSwitch:
    """Run a switch to its end in this process (manage.py commands, tests): same steps."""
    switch = switch_start(switch_id=switch.pk, fan_out=False)
    size = chunk_size()
    if switch.status == ModelSwitch.Status.ENCODING:
        todo = list(_missing_vectors(switch, switch.max_image_id).order_by("pk").values_list("pk", flat=True))
        for i in range(0, len(todo), size):
            switch_encode_chunk(switch_id=switch.pk, image_ids=todo[i:i + size], chain=False)
    if ModelSwitch.objects.get(pk=switch.pk).status == ModelSwitch.Status.INDEXING:
        switch_finish(switch_id=switch.pk, chain=False)
        switch_catch_up(switch_id=switch.pk)
    if switch.status == ModelSwitch.Status.CAPTIONING:
        todo = list(_missing_captions(switch).order_by("pk").values_list("pk", flat=True))
        for i in range(0, len(todo), size):
            switch_caption_chunk(switch_id=switch.pk, image_ids=todo[i:i + size])
    return ModelSwitch.objects.get(pk=switch.pk)
