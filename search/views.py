"""Search and caption pages, and the htmx partials of the image page. Thin: forms -> services.

Every page works without JavaScript (plain GET/POST forms); with htmx, results and partials
are swapped in place. Service errors become a readable message: with the service's status
code on a full page, with 200 on an htmx partial (the message is the content to swap in, and
a failed XHR would only add a console error).
"""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from embeddings import selectors as emb_selectors
from embeddings.models import ModelVersion
from embeddings.services import captions as caption_services
from project.exceptions import ApplicationError
from search import selectors, services
from search.forms import CaptionForm, SearchForm
from search.services.paragraphs import similar_descriptions_context

SIMILAR_ON_IMAGE_PAGE = 12
DUPLICATES_ON_IMAGE_PAGE = 8
NEAREST_CAPTIONS_ON_IMAGE_PAGE = 5
BEST_CAPTIONS_ON_IMAGE_PAGE = 3


def _htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def _status(request: HttpRequest, status: int) -> int:
    return 200 if _htmx(request) else status


def _search_context(request: HttpRequest) -> tuple[dict[str, Any], int]:
    source = request.POST if request.method == "POST" else request.GET
    form = SearchForm(source, request.FILES or None)
    context: dict[str, Any] = {"form": form, "collections": emb_selectors.collection_list(user=request.user),
                               "term_rows": getattr(form, "term_rows", [])}
    status = 200
    if not form.is_valid():
        context["error"] = "; ".join(e for errors in form.errors.values() for e in errors)
        return context, 400
    if not form.has_query():
        return context, status
    d = form.cleaned_data
    try:
        page = services.search_images(
            user=request.user, terms=form.terms(), query_token=d.get("query") or None, k=d.get("k") or 24,
            page=d.get("page") or 1, filters=form.filters(request.user), cutoff=form.cutoff())
    except ApplicationError as exc:
        context["error"] = exc.message
        return context, exc.status_code
    params = form.link_params(page.query_token)
    context.update({"page": page, "params": params.urlencode(), "q": d.get("q") or "",
                    "canonical": f"/search/?{params.urlencode()}&page={page.page}"})
    return context, status


@require_http_methods(["GET", "POST"])
def search_page(request: HttpRequest) -> HttpResponse:
    context, status = _search_context(request)
    template = "search/_results.html" if _htmx(request) else "search/search.html"
    return render(request, template, context, status=_status(request, status))


@require_http_methods(["GET", "POST"])
def search_results(request: HttpRequest) -> HttpResponse:
    """The results partial (htmx target); pushes the page's shareable GET URL."""
    context, status = _search_context(request)
    response = render(request, "search/_results.html", context, status=_status(request, status))
    if context.get("canonical"):
        response["HX-Push-Url"] = context["canonical"]
    return response


def _visible_image(request: HttpRequest, pk: int) -> Any:
    image = emb_selectors.image_visible(user=request.user, image_id=pk)
    if image is None:
        raise Http404("No such image.")
    return image


def _encoded(image_id: int) -> bool:
    """Whether the active version has this image's vector (else the extras would encode on
    the fly, loading the image model in the web process for a page view)."""
    version = emb_selectors.model_version_active(kind=ModelVersion.Kind.EMBEDDING)
    return version is not None and selectors.image_vector(version_id=version.pk, image_id=image_id) is not None


def _partial(request: HttpRequest, template: str, fn: Any, **context: Any) -> HttpResponse:
    status = 200
    if not _encoded(context["image"].pk):
        context["error"] = "This image has not been encoded by the active model yet."
        return render(request, template, context)
    try:
        context.update(fn())
    except ApplicationError as exc:
        context["error"], status = exc.message, exc.status_code
    return render(request, template, context, status=_status(request, status))


@require_GET
def image_similar_partial(request: HttpRequest, pk: int) -> HttpResponse:
    image = _visible_image(request, pk)
    return _partial(request, "search/_similar.html", lambda: {
        "page": services.image_similar(user=request.user, image_id=pk, k=SIMILAR_ON_IMAGE_PAGE)}, image=image)


@require_GET
def image_labels_partial(request: HttpRequest, pk: int) -> HttpResponse:
    image = _visible_image(request, pk)
    return _partial(request, "search/_labels.html",
                    lambda: {"labels": services.image_labels(user=request.user, image_id=pk)}, image=image)


@require_GET
def image_duplicates_partial(request: HttpRequest, pk: int) -> HttpResponse:
    image = _visible_image(request, pk)
    return _partial(request, "search/_duplicates.html", lambda: {
        "page": services.image_duplicates(user=request.user, image_id=pk, k=DUPLICATES_ON_IMAGE_PAGE),
        "threshold": services.duplicate_cutoff().min_score}, image=image)


@require_GET
def image_nearest_captions_partial(request: HttpRequest, pk: int) -> HttpResponse:
    """Image -> text: the captions of other images nearest to this one."""
    image = _visible_image(request, pk)
    return _partial(request, "search/_nearest_captions.html", lambda: {
        "page": services.search_captions(user=request.user, terms=[services.QueryTerm(image_id=pk)],
                                         k=NEAREST_CAPTIONS_ON_IMAGE_PAGE, exclude_image_ids=[pk])}, image=image)


@require_GET
def image_best_captions_partial(request: HttpRequest, pk: int) -> HttpResponse:
    """The active captioner's n best captions with their scores, with its stored decoding; a
    page view saves nothing (the "Generate a caption" button does)."""
    image = _visible_image(request, pk)
    return _partial(request, "search/_best_captions.html", lambda: {
        "result": caption_services.caption_generate(user=request.user, image_id=pk, n=BEST_CAPTIONS_ON_IMAGE_PAGE,
                                                    save=False, at_most_beam=True)}, image=image)


def image_similar_descriptions_partial(request: HttpRequest, pk: int) -> HttpResponse:
    """Images described like this one (paragraph vectors), for the image page."""
    image = _visible_image(request, pk)
    context = similar_descriptions_context(user=request.user, image_id=image.pk)
    status = context.pop("status", 200)
    return render(request, "search/_similar_descriptions.html", {"image": image, **context},
                  status=_status(request, status))


def _captions_context(request: HttpRequest, image: Any, **extra: Any) -> dict[str, Any]:
    """Every caption of the image once (human, imported, then generated), each marked."""
    can_write = emb_selectors.collection_can_write(user=request.user, collection=image.collection)
    return {"image": image, "can_write": can_write, "captions": emb_selectors.image_captions_ordered(image=image),
            **extra}


@require_http_methods(["GET", "POST"])
def image_captions_partial(request: HttpRequest, pk: int) -> HttpResponse:
    """Every caption of an image, marked by source, with a "generate" button and accept/edit
    forms for the generated ones."""
    image = _visible_image(request, pk)
    extra: dict[str, Any] = {}
    status = 200
    if request.method == "POST":
        try:
            extra["result"] = caption_services.caption_generate(user=request.user, image_id=pk)
        except ApplicationError as exc:
            extra["error"], status = exc.message, exc.status_code
    return render(request, "search/_image_captions.html", _captions_context(request, image, **extra),
                  status=_status(request, status))


@require_POST
def caption_accept_partial(request: HttpRequest, pk: int) -> HttpResponse:
    caption = emb_selectors.caption_visible(user=request.user, caption_id=pk)
    if caption is None:
        raise Http404("No such caption.")
    extra: dict[str, Any] = {}
    status = 200
    try:
        caption_services.caption_accept(user=request.user, caption_id=pk, text=request.POST.get("text"))
        extra["accepted"] = pk
    except ApplicationError as exc:
        extra["error"], status = exc.message, exc.status_code
    return render(request, "search/_image_captions.html", _captions_context(request, caption.image, **extra),
                  status=_status(request, status))


@require_http_methods(["GET", "POST"])
def caption_page(request: HttpRequest) -> HttpResponse:
    """Drop an image, get captions (the image is not stored)."""
    form = CaptionForm(request.POST or None, request.FILES or None)
    context: dict[str, Any] = {"form": form}
    status = 200
    if request.method == "POST":
        if form.is_valid():
            d = form.cleaned_data
            try:
                data = d["image"].read(settings.LOUPE_MAX_UPLOAD_BYTES + 1)
                context["result"] = caption_services.caption_generate(user=request.user, image_bytes=data,
                                                                      beam=d.get("beam") or None, n=d.get("n") or 3,
                                                                      at_most_beam=True)
            except ApplicationError as exc:
                context["error"], status = exc.message, exc.status_code
        else:
            context["error"], status = "Choose an image file.", 400
    template = "search/_generated.html" if _htmx(request) and request.method == "POST" else "search/caption.html"
    return render(request, template, context, status=_status(request, status))
