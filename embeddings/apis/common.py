"""Shared pieces of the REST APIs that show images (this app's and search's)."""
from __future__ import annotations

from typing import Any

from rest_framework.request import Request


class FileUrls:
    """Absolute URLs of stored files for one response: the origin is worked out once, not per
    file (request.build_absolute_uri re-parsed it for each of a page's 40 URLs)."""

    _CONTEXT_KEY = "_file_urls"

    def __init__(self, request: Request) -> None:
        self.request = request
        self.origin = request.build_absolute_uri("/")[:-1]  # scheme://host[:port]

    @classmethod
    def of(cls, context: dict[str, Any]) -> FileUrls | None:
        """The one FileUrls of a serializer context (shared by every item of a list), or None
        without a request (URLs are then left relative)."""
        request = context.get("request")
        if request is None:
            return None
        urls = context.get(cls._CONTEXT_KEY)
        if urls is None or urls.request is not request:
            urls = context[cls._CONTEXT_KEY] = cls(request)
        return urls

    def __call__(self, f: Any) -> str | None:
        if not f:
            return None
        url = f.url
        if url.startswith("/") and not url.startswith("//"):
            return self.origin + url
        return self.request.build_absolute_uri(url)  # already absolute (e.g. a CDN storage)
