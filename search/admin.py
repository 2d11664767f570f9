"""Admin for index records: status at a glance, and a rebuild action (enqueued after commit)."""
from __future__ import annotations

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from search.models import SearchIndex
from search.services import enqueue_index_rebuild


@admin.register(SearchIndex)
class SearchIndexAdmin(admin.ModelAdmin):
    list_display = ["model_version", "modality", "status", "index_type", "count", "recall_at_10", "built_at"]
    list_filter = ["modality", "status"]
    readonly_fields = [f.name for f in SearchIndex._meta.fields]
    actions = ["rebuild"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Rebuild from stored vectors")
    def rebuild(self, request: HttpRequest, queryset: QuerySet[SearchIndex]) -> None:
        for record in queryset:
            transaction.on_commit(lambda r=record: enqueue_index_rebuild(r.model_version_id, r.modality))
        self.message_user(request, f"Rebuild of {queryset.count()} index(es) enqueued.", messages.SUCCESS)
