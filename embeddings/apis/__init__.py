"""REST API of the embeddings app: thin DRF views over its selectors and services (see docs/api.md)."""
from embeddings.apis.collections import CollectionDetailApi, CollectionListCreateApi
from embeddings.apis.images import ImageDetailApi, ImageListCreateApi
from embeddings.apis.words import WordsAnalogyApi, WordsNearestApi, WordsTrainApi

__all__ = ["CollectionDetailApi", "CollectionListCreateApi", "ImageDetailApi", "ImageListCreateApi", "WordsAnalogyApi",
           "WordsNearestApi", "WordsTrainApi"]
