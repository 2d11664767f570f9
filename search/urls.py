"""Routes of this app: `page_urls` mount at /, `api_urls` under /api/v1/ (see project/urls.py)."""
from django.urls import path

from search import apis, views

page_urls = [
    path("search/", views.search_page, name="search"),
    path("search/results/", views.search_results, name="search-results"),
    path("search/images/<int:pk>/similar/", views.image_similar_partial, name="search-image-similar"),
    path("search/images/<int:pk>/labels/", views.image_labels_partial, name="search-image-labels"),
    path("search/images/<int:pk>/similar-descriptions/", views.image_similar_descriptions_partial,
         name="search-image-similar-descriptions"),
    path("search/images/<int:pk>/captions/", views.image_captions_partial, name="search-image-captions"),
    path("search/images/<int:pk>/best-captions/", views.image_best_captions_partial, name="search-image-best-captions"),
    path("search/images/<int:pk>/duplicates/", views.image_duplicates_partial, name="search-image-duplicates"),
    path("search/images/<int:pk>/nearest-captions/", views.image_nearest_captions_partial,
         name="search-image-nearest-captions"),
    path("search/captions/<int:pk>/accept/", views.caption_accept_partial, name="search-caption-accept"),
    path("caption/", views.caption_page, name="caption"),
]

api_urls = [
    path("search/", apis.SearchApi.as_view(), name="api-search"),
    path("search/captions/", apis.CaptionSearchApi.as_view(), name="api-search-captions"),
    path("search/paragraph/", apis.ParagraphSearchApi.as_view(), name="api-search-paragraph"),
    path("captions/", apis.CaptionGenerateApi.as_view(), name="api-captions"),
    path("captions/<int:pk>/", apis.CaptionAcceptApi.as_view(), name="api-caption-detail"),
    path("images/<int:pk>/labels/", apis.ImageLabelsApi.as_view(), name="api-image-labels"),
    path("images/<int:pk>/similar/", apis.ImageSimilarApi.as_view(), name="api-image-similar"),
    path("images/<int:pk>/explain/", apis.ImageExplainApi.as_view(), name="api-image-explain"),
    path("images/<int:pk>/similar-descriptions/", apis.ImageSimilarDescriptionsApi.as_view(),
         name="api-image-similar-descriptions"),
]
