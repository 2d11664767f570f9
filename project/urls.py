"""URL wiring: pages at /, the REST API under /api/v1/, its schema and docs, the admin.

Any other path under /api/ answers the API's JSON 404 (not Django's HTML page, which DEBUG
turns into a debug page), and the token endpoint answers a django-axes lockout with 429.
"""
from axes.helpers import get_cool_off
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.templatetags.static import static
from django.urls import Resolver404, include, path, re_path, resolve
from django.views.decorators.csrf import csrf_exempt
from django.views.generic import TemplateView
from drf_spectacular.utils import OpenApiResponse, extend_schema
from drf_spectacular.views import SpectacularAPIView
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings

from embeddings import urls as embeddings_urls
from project import accounts, observability
from project.exceptions import LockedOut, error_body
from project.schema import ERROR
from search import urls as search_urls
from training import urls as training_urls


class TokenApi(ObtainAuthToken):
    """DRF's token login with the project's parsers (depth-bounded JSON) and a 429 lockout.

    django-axes marks the request it was given as locked out, but DRF hands authenticate() its
    own Request wrapper, so AxesMiddleware never sees the mark and DRF answered 400."""

    permission_classes = [AllowAny]
    parser_classes = api_settings.DEFAULT_PARSER_CLASSES

    @extend_schema(responses={200: ObtainAuthToken.serializer_class, 429: OpenApiResponse(
        ERROR, description="Too many failed logins for this username from this address (`locked_out`).")})
    def post(self, request: Request, *args: object, **kwargs: object) -> Response:
        try:
            return super().post(request, *args, **kwargs)
        except ValidationError:
            if getattr(request, "axes_locked_out", False):
                cool_off = get_cool_off(request)
                raise LockedOut("Too many failed logins; try again later.",
                                retry_after=int(cool_off.total_seconds()) if cool_off else 60) from None
            raise


@csrf_exempt  # changes nothing; a CSRF refusal would be an HTML 403 instead of this 404
def api_not_found(request: HttpRequest) -> HttpResponse:
    """JSON 404 for unknown /api/ paths. A GET missing only its trailing slash is redirected, as
    CommonMiddleware would have done before this catch-all matched every path."""
    path_info = request.path_info
    if settings.APPEND_SLASH and not path_info.endswith("/") and request.method in ("GET", "HEAD"):
        try:
            match = resolve(path_info + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not api_not_found:
            return HttpResponsePermanentRedirect(request.get_full_path(force_append_slash=True))
    hint = "" if path_info.endswith("/") else " (API paths end with a slash)"
    return JsonResponse(error_body("not_found", f"No API endpoint at {request.path}{hint}."), status=404)


admin.site.site_header = admin.site.site_title = "Loupe administration"
admin.site.index_title = "Models, training runs and collections"

api_v1 = [
    path("auth/token/", TokenApi.as_view(), name="api-token"),
    *embeddings_urls.api_urls,
    *search_urls.api_urls,
    *training_urls.api_urls,
]

urlpatterns = [
    path("favicon.ico", lambda request: HttpResponsePermanentRedirect(static("favicon.svg"))),
    path("healthz", observability.healthz, name="healthz"),
    path("readyz", observability.readyz, name="readyz"),
    path("metrics", observability.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/token/", accounts.token_page, name="account-token"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI from our own template (sidecar files + static/js/api_docs.js): the CSP allows no inline code
    path("api/docs/", TemplateView.as_view(template_name="api_docs/swagger.html"), name="api-docs"),
    re_path(r"^api/", api_not_found),  # last: only what nothing above matched
    *embeddings_urls.page_urls,
    *search_urls.page_urls,
    *training_urls.page_urls,
]
