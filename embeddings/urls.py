from django.urls import path, re_path

from embeddings import apis, views

page_urls = [
    path("", views.gallery, name="gallery"),
    path("images/<int:pk>/", views.image_detail, name="image-detail"),
    path("upload/", views.upload_page, name="upload"),
    path("collections/", views.collections_page, name="collections"),
    path("collections/<int:pk>/edit/", views.collection_edit, name="collection-edit"),
    path("collections/<int:pk>/delete/", views.collection_delete, name="collection-delete"),
    path("words/", views.words_page, name="words"),
    path("words/results/", views.words_results, name="words-results"),
    re_path(r"^media/(?P<path>(images|thumbs)/[0-9a-zA-Z/._-]+)$", views.media, name="media"),
]

api_urls = [
    path("images/", apis.ImageListCreateApi.as_view(), name="api-images"),
    path("images/<int:pk>/", apis.ImageDetailApi.as_view(), name="api-image-detail"),
    path("collections/", apis.CollectionListCreateApi.as_view(), name="api-collections"),
    path("collections/<int:pk>/", apis.CollectionDetailApi.as_view(), name="api-collection-detail"),
    path("words/nearest/", apis.WordsNearestApi.as_view(), name="api-words-nearest"),
    path("words/analogy/", apis.WordsAnalogyApi.as_view(), name="api-words-analogy"),
    path("words/train/", apis.WordsTrainApi.as_view(), name="api-words-train"),
]
