"""URL wiring: pages at /, the REST API under /api/v1/, its schema and docs, the admin."""
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path
from rest_framework.authtoken.views import obtain_auth_token
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from embeddings import urls as embeddings_urls
from project import observability
from search import urls as search_urls
from training import urls as training_urls

api_v1 = [
    path("auth/token/", obtain_auth_token, name="api-token"),
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
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    *embeddings_urls.page_urls,
    *search_urls.page_urls,
    *training_urls.page_urls,
]
