from django.contrib import admin

from embeddings.models import Caption, Collection, Image


@admin.register(Collection)
class CollectionAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "is_public", "created_at"]
    search_fields = ["name"]


class CaptionInline(admin.TabularInline):
    model = Caption
    extra = 0
    fields = ["text", "source", "model_version", "score"]


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["id", "collection", "source_name", "split", "status", "width", "height", "created_at"]
    list_filter = ["collection", "split", "status"]
    search_fields = ["source_name", "sha256"]
    readonly_fields = ["sha256", "width", "height", "format", "size_bytes", "file", "thumbnail", "attempts"]
    inlines = [CaptionInline]
