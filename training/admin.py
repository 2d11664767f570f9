"""Admin for retraining: Retrain form, run pages with live progress, promote / roll back.

Every button ends in one service call (training.services); pages read through selectors.
URLs (all under /admin/):
  training/trainingrun/retrain/?kind=embedding|captioner   the Retrain form
  training/trainingrun/<id>/change/                         run page (live progress, htmx)
  training/trainingrun/<id>/live/                           the polled fragment
  training/trainingrun/<id>/cancel/                         POST
  embeddings/modelversion/<id>/promote/  and  .../rollback/  POST
"""
from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from embeddings.models import ModelVersion
from project.exceptions import ApplicationError
from training import selectors, services
from training.forms import RetrainForm
from training.models import ModelSwitch, TrainingRun
from training.services.configs import KINDS
from training.services.evaluation import evaluation_set


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _try(request: HttpRequest, action, success: str) -> Any:
    try:
        result = action()
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return None
    messages.success(request, success)
    return result


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "status", "progress", "collection_names", "attempts", "model_version", "created_at"]
    list_filter = ["kind", "status"]
    change_list_template = "admin/training/trainingrun/change_list.html"
    actions = ["cancel_runs"]

    def get_queryset(self, request: HttpRequest):
        return selectors.training_run_list()

    @admin.display(description="progress")
    def progress(self, run: TrainingRun) -> str:
        return f"epoch {run.epoch}/{run.total_epochs}, step {run.step}/{run.total_steps or '?'}"

    @admin.display(description="collections")
    def collection_names(self, run: TrainingRun) -> str:
        return ", ".join(c.name for c in run.collections.all())

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # runs start from the Retrain form

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("retrain/", view(self.retrain_view), name="training_trainingrun_retrain"),
            path("<int:run_id>/live/", view(self.live_view), name="training_trainingrun_live"),
            path("<int:run_id>/cancel/", view(require_POST(self.cancel_view)), name="training_trainingrun_cancel"),
            path("<int:run_id>/change/", view(self.run_view), name="training_trainingrun_change"),
            *super().get_urls(),
        ]

    @admin.action(description="Cancel selected runs (stop at the next step)")
    def cancel_runs(self, request: HttpRequest, queryset) -> None:
        for run in queryset.filter(status__in=TrainingRun.ACTIVE_STATUSES):
            _try(request, lambda r=run: services.training_run_cancel(run=r), f"Cancelling run {run.pk}.")

    def retrain_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.is_staff:
            return HttpResponse(status=403)
        kind = request.POST.get("kind") or request.GET.get("kind") or "embedding"
        kind = kind if kind in KINDS else "embedding"
        form = RetrainForm(request.POST or None, kind=kind)
        if request.method == "POST" and form.is_valid():
            run = _try(request, lambda: services.training_run_start(
                kind=kind, collections=list(form.cleaned_data["collections"]), config_overrides=form.overrides(),
                config_sets=form.sets(), user=request.user), f"{kind.capitalize()} training queued.")
            if run is not None:
                return HttpResponseRedirect(reverse("admin:training_trainingrun_change", args=[run.pk]))
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "form": form, "kind": kind,
                   "kinds": KINDS, "title": f"Retrain the {kind} model"}
        return TemplateResponse(request, "admin/training/retrain.html", context)

    def _run_context(self, request: HttpRequest, run: TrainingRun) -> dict[str, Any]:
        progress = selectors.run_progress(run)
        return {"run": run, "p": progress, "eta": _duration(progress["eta_s"]),
                "series": selectors.chart_series(run), "live_url": reverse("admin:training_trainingrun_live",
                                                                           args=[run.pk])}

    def run_view(self, request: HttpRequest, run_id: int) -> HttpResponse:
        run = get_object_or_404(selectors.training_run_list(), pk=run_id)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "original": run,
                   "title": f"{run.kind.capitalize()} training run {run.pk}", **self._run_context(request, run),
                   "config_json": json.dumps(run.config, indent=2, sort_keys=True)}
        return TemplateResponse(request, "admin/training/trainingrun/detail.html", context)

    def live_view(self, request: HttpRequest, run_id: int) -> HttpResponse:
        run = get_object_or_404(selectors.training_run_list(), pk=run_id)
        return TemplateResponse(request, "admin/training/trainingrun/_live.html", self._run_context(request, run))

    def cancel_view(self, request: HttpRequest, run_id: int) -> HttpResponse:
        run = get_object_or_404(TrainingRun, pk=run_id)
        _try(request, lambda: services.training_run_cancel(run=run), f"Run {run.pk} will stop at its next step.")
        return HttpResponseRedirect(reverse("admin:training_trainingrun_change", args=[run.pk]))


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "name", "family", "status", "dev_score", "in_domain_set", "ood_set", "parent",
                    "created_at", "promoted_at"]
    list_filter = ["kind", "status", "family"]
    readonly_fields = ["kind", "name", "family", "status", "directory", "files", "config", "encoders", "metrics",
                       "dim", "parent", "created_at", "promoted_at"]
    change_list_template = "admin/training/modelversion/change_list.html"
    change_form_template = "admin/training/modelversion/change_form.html"
    actions = ["promote_version", "rollback_version"]

    @admin.display(description="dev R@1 / CIDEr-D")
    def dev_score(self, version: ModelVersion) -> str:
        value = selectors.primary_metric(version.kind, (version.metrics or {}).get("dev") or {})
        return "" if value is None else f"{value:.2f}"

    @admin.display(description="in-domain dev (T2I / I2T R@1, size)")
    def in_domain_set(self, version: ModelVersion) -> str:
        return _set_cell(evaluation_set(version, "in_domain"))

    @admin.display(description="out-of-domain dev (T2I / I2T R@1, size)")
    def ood_set(self, version: ModelVersion) -> str:
        return _set_cell(evaluation_set(version, "ood"))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The active version serves every search; roll back or promote another first.
        return super().has_delete_permission(request, obj) and (obj is None or obj.status != ModelVersion.Status.ACTIVE)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        recent = ModelSwitch.objects.select_related("version", "previous")[:5]
        rates = [(s, selectors.switch_progress(s)) for s in recent]
        switches = [(s, rate, _duration(rate["eta_s"])) for s, rate in rates]
        return super().changelist_view(request, {**(extra_context or {}), "switches": switches})

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        version = get_object_or_404(ModelVersion, pk=object_id)
        extra = {"can_promote": version.status != ModelVersion.Status.ACTIVE,
                 "can_rollback": version.status == ModelVersion.Status.ACTIVE,
                 "rollback_to": services.promotion.rollback_target(version),
                 "review": services.promotion_review(version) if version.status != ModelVersion.Status.ACTIVE else None}
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:version_id>/promote/", view(require_POST(self.promote_view)),
                 name="embeddings_modelversion_promote"),
            path("<int:version_id>/rollback/", view(require_POST(self.rollback_view)),
                 name="embeddings_modelversion_rollback"),
            *super().get_urls(),
        ]

    def promote_view(self, request: HttpRequest, version_id: int) -> HttpResponse:
        """POST promotes; a candidate promotion_review warns about gets a confirmation page
        (candidate against active on each set, with sizes) whose button posts force=1."""
        version = get_object_or_404(ModelVersion, pk=version_id)
        force = request.POST.get("force") == "1"
        try:
            services.model_version_promote(version=version, user=request.user, force=force)
        except services.promotion.NeedsConfirmation as exc:
            context = {**self.admin_site.each_context(request), "opts": self.model._meta, "original": version,
                       "review": exc.review, "title": f"Promote {version.name}?"}
            return TemplateResponse(request, "admin/training/modelversion/confirm_promote.html", context)
        except ApplicationError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Promoting {version.name}: searches use the current version until the switch.")
        return HttpResponseRedirect(reverse("admin:embeddings_modelversion_changelist"))

    def rollback_view(self, request: HttpRequest, version_id: int) -> HttpResponse:
        version = get_object_or_404(ModelVersion, pk=version_id)
        _try(request, lambda: services.model_version_rollback(version=version, user=request.user),
             f"Rolling back {version.name} to the version active before it.")
        return HttpResponseRedirect(reverse("admin:embeddings_modelversion_changelist"))

    @admin.action(description="Promote the selected version")
    def promote_version(self, request: HttpRequest, queryset) -> HttpResponse | None:
        if queryset.count() != 1:
            messages.error(request, "Select exactly one version to promote.")
            return None
        version = queryset.first()
        try:
            services.model_version_promote(version=version, user=request.user)
        except services.promotion.NeedsConfirmation:  # the version page shows why, and the confirm button
            return HttpResponseRedirect(reverse("admin:embeddings_modelversion_change", args=[version.pk]))
        except ApplicationError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Promoting {version.name}.")
        return None

    @admin.action(description="Roll back the selected active version")
    def rollback_version(self, request: HttpRequest, queryset) -> None:
        for version in queryset:
            _try(request, lambda v=version: services.model_version_rollback(version=v, user=request.user),
                 f"Rolling back {version.name}.")


def _set_cell(entry: dict | None) -> str:
    """"24.0 / 32.8 (1000 images, 5000 captions)" for one evaluation set, "" when not scored."""
    if not entry or not entry.get("metrics"):
        return ""
    m = entry["metrics"]
    if "t2i_r1" not in m:
        return ""
    size = f" ({entry['images']} images, {entry['captions']} captions)" if entry.get("images") is not None else ""
    return f"{m['t2i_r1']:.1f} / {m.get('i2t_r1', 0.0):.1f}{size}"


@admin.register(ModelSwitch)
class ModelSwitchAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "action", "version", "previous", "status", "done", "total", "created_at",
                    "switched_at", "error"]
    list_filter = ["kind", "status", "action"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
