"""Routes of this app: `page_urls` mount at /, `api_urls` under /api/v1/ (see project/urls.py)."""
page_urls: list = []
api_urls: list = []
