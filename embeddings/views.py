"""Server-rendered pages for browsing and uploading. Thin: selectors in, templates out."""
from __future__ import annotations

import mimetypes
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from embeddings import selectors, services, words
from embeddings.forms import CollectionForm
from embeddings.models import Collection, Image
from project.exceptions import ApplicationError


@require_GET
def gallery(request: HttpRequest) -> HttpResponse:
    images = selectors.image_list(user=request.user).prefetch_related("captions")
    current = request.GET.get("collection", "")
    if current:
        images = images.filter(selectors.collection_named_q(user=request.user, names=[current]))
    page = Paginator(images, 48).get_page(request.GET.get("page"))
    collections = selectors.collection_list(user=request.user)
    return render(request, "embeddings/gallery.html", {"page": page, "collections": collections, "current": current})


@require_GET
def image_detail(request: HttpRequest, pk: int) -> HttpResponse:
    image = selectors.image_get_visible(user=request.user, image_id=pk)
    if image is None:
        raise Http404("No such image.")
    can_write = selectors.collection_can_write(user=request.user, collection=image.collection)
    return render(request, "embeddings/image_detail.html", {
        "image": image, "captions": selectors.image_captions_ordered(image=image), "can_write": can_write})


@login_required
@require_GET
def upload_page(request: HttpRequest) -> HttpResponse:
    if request.user.is_staff:
        collections = Collection.objects.all()
    else:
        collections = Collection.objects.filter(owner=request.user)
    return render(request, "embeddings/upload.html", {"collections": collections})


@login_required
@require_http_methods(["GET", "POST"])
def collections_page(request: HttpRequest) -> HttpResponse:
    """The user's collections (staff: all) with counts and indexing state; POST creates one."""
    form = CollectionForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            made = services.collection_create(owner=request.user, **form.cleaned_data)
        except ApplicationError as exc:
            form.add_error("name", exc.message)
        else:
            messages.success(request, f"Collection {made.name!r} created.")
            return redirect("collections")
    rows = [(c, CollectionForm(initial={"name": c.name, "description": c.description, "is_public": c.is_public},
                               prefix=f"c{c.pk}"))
            for c in selectors.collection_manageable(user=request.user)]
    status = 400 if request.method == "POST" else 200
    return render(request, "embeddings/collections.html", {"form": form, "rows": rows}, status=status)


def _manageable(request: HttpRequest, pk: int) -> Collection:
    collection = selectors.collection_manageable(user=request.user).filter(pk=pk).first()
    if collection is None:  # someone else's, or missing: the same answer
        raise Http404("No such collection.")
    return collection


@login_required
@require_POST
def collection_edit(request: HttpRequest, pk: int) -> HttpResponse:
    collection = _manageable(request, pk)
    form = CollectionForm(request.POST, prefix=f"c{pk}")
    if not form.is_valid():
        messages.error(request, "Not saved: " + "; ".join(e for errs in form.errors.values() for e in errs))
        return redirect("collections")
    try:
        services.collection_update(collection=collection, **form.cleaned_data)
    except ApplicationError as exc:
        messages.error(request, f"Not saved: {exc.message}")
    else:
        messages.success(request, f"Collection {collection.name!r} saved.")
    return redirect("collections")


@login_required
@require_POST
def collection_delete(request: HttpRequest, pk: int) -> HttpResponse:
    collection = _manageable(request, pk)
    name = collection.name
    count = services.collection_delete(collection=collection)
    messages.success(request, f"Collection {name!r} and its {count} image{'s' if count != 1 else ''} deleted.")
    return redirect("collections")


@require_GET
def media(request: HttpRequest, path: str) -> FileResponse:
    """Serve a stored raster or thumbnail only to users who may see its image.

    Stored files are re-encoded by the server, so they are served inline with their own image
    type (and `nosniff`, added by SecurityMiddleware). Production serves /media/ from nginx with
    the same headers for public collections; see docs/deploy.md.
    """
    # visible_image_ids has no select_related, so `exists()` needs no columns (image_list's
    # select_related + only("pk") raised FieldError: every /media/ request was a 500).
    visible = selectors.visible_image_ids(user=request.user).filter(Q(file=path) | Q(thumbnail=path)).exists()
    if not visible or not default_storage.exists(path):
        raise Http404("No such file.")
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    if not content_type.startswith("image/"):
        raise Http404("No such file.")
    response = FileResponse(default_storage.open(path, "rb"), content_type=content_type)
    response["Cache-Control"] = "private, max-age=3600"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


@require_GET
def words_page(request: HttpRequest) -> HttpResponse:
    collections = list(selectors.collection_list(user=request.user))
    current = request.GET.get("collection") or (collections[0].name if collections else "")
    chosen = next((c for c in collections if c.name == current), None)
    ready = bool(chosen and words.word2vec_path(chosen).exists())
    can_train = bool(chosen and selectors.collection_can_write(user=request.user, collection=chosen))
    last_run = words.word2vec_last_run(collection=chosen) if chosen else None
    demos = [{"words": (a, b, c), "expected": d, "query": urlencode({"collection": current, "a": a, "b": b, "c": c})}
             for a, b, c, d in (words.words_demo_analogies(collection=chosen) if chosen and ready else [])]
    return render(request, "embeddings/words.html", {"collections": collections, "current": current,
                                                     "ready": ready, "can_train": can_train, "last_run": last_run,
                                                     "demo_analogies": demos})


@require_GET
def words_results(request: HttpRequest) -> HttpResponse:
    """htmx partial: nearest words, or an analogy when a, b and c are given."""
    collection = selectors.collection_get_visible(user=request.user, name=request.GET.get("collection", ""))
    context: dict = {"results": [], "error": ""}
    try:
        if collection is None:
            raise ApplicationError("Choose a collection.")
        if request.GET.get("a") or request.GET.get("b") or request.GET.get("c"):
            context["results"] = words.words_analogy(collection=collection, a=request.GET.get("a", ""),
                                                     b=request.GET.get("b", ""), c=request.GET.get("c", ""))
        else:
            context["results"] = words.words_nearest(collection=collection, word=request.GET.get("word", ""))
    except ApplicationError as exc:
        context["error"] = exc.message
    return render(request, "embeddings/_words_results.html", context)


__all__ = ["gallery", "image_detail", "upload_page", "media", "words_page", "words_results", "Image"]
