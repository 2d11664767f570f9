"""Admin for index records: status and vector coverage at a glance, rebuild and "reindex missing"
actions (enqueued after commit)."""
from __future__ import annotations

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from search import selectors
from search.models import SearchIndex
from search.services import enqueue_index_rebuild, enqueue_reindex_missing


@admin.register(SearchIndex)
class SearchIndexAdmin(admin.ModelAdmin):
    list_display = ["model_version", "modality", "status", "index_type", "count", "coverage", "recall_at_10",
                    "built_at"]
    list_filter = ["modality", "status"]
    readonly_fields = [f.name for f in SearchIndex._meta.fields] + ["coverage"]
    actions = ["rebuild", "reindex_missing"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="vector coverage")
    def coverage(self, obj: SearchIndex) -> str:
        """Items of this modality that have a vector of the record's version (100% after "reindex missing").

        Counted afresh for each row (a few COUNT queries; there are two rows per model version)."""
        report = selectors.coverage(version=obj.model_version)
        key = "images" if obj.modality == "image" else "captions"
        return f"{report[f'{key[:-1]}_coverage']:.1%} ({report[f'{key}_with_vectors']:,} of {report[key]:,} {key})"

    @admin.action(description="Rebuild from stored vectors")
    def rebuild(self, request: HttpRequest, queryset: QuerySet[SearchIndex]) -> None:
        for record in queryset:
            transaction.on_commit(lambda r=record: enqueue_index_rebuild(r.model_version_id, r.modality))
        self.message_user(request, f"Rebuild of {queryset.count()} index(es) enqueued.", messages.SUCCESS)

    @admin.action(description="Reindex missing: encode items without vectors, drop deleted ones")
    def reindex_missing(self, request: HttpRequest, queryset: QuerySet[SearchIndex]) -> None:
        versions = sorted(set(queryset.values_list("model_version_id", flat=True)))
        for version_id in versions:
            transaction.on_commit(lambda v=version_id: enqueue_reindex_missing(v))
        self.message_user(request, f"Reindex missing enqueued for {len(versions)} model version(s); "
                                   "coverage here reaches 100% when it finishes.", messages.SUCCESS)
