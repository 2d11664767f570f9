"""REST API of the search app: thin DRF views over search.services (see docs/api.md)."""
from search.apis.captions import CaptionAcceptApi, CaptionGenerateApi
from search.apis.images import ImageExplainApi, ImageLabelsApi, ImageSimilarApi
from search.apis.paragraphs import ImageSimilarDescriptionsApi, ParagraphSearchApi
from search.apis.search import CaptionSearchApi, SearchApi

__all__ = ["CaptionAcceptApi", "CaptionGenerateApi", "CaptionSearchApi", "ImageExplainApi", "ImageLabelsApi",
           "ImageSimilarApi", "ImageSimilarDescriptionsApi", "ParagraphSearchApi", "SearchApi"]
