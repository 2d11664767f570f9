"""What a search asks for: the modalities and the filters applied inside it."""
from __future__ import annotations

from dataclasses import dataclass

from embeddings.models import Caption
from search.models import SearchIndex

# str() of a Django choice is its value (spelled so because, without Django stubs, mypy reads the
# members as plain str).
IMAGE, CAPTION = str(SearchIndex.Modality.IMAGE), str(SearchIndex.Modality.CAPTION)
MODALITIES = (IMAGE, CAPTION)
HUMAN_SOURCES = (Caption.Source.HUMAN, Caption.Source.IMPORTED)


@dataclass(frozen=True)
class SearchFilters:
    """Restrictions applied inside the search (as an allow-list), never after it."""

    collections: tuple[str, ...] = ()  # collection names; empty = every visible collection
    split: str | None = None  # train | dev | test | none
    has_human_caption: bool | None = None  # human or imported caption present / absent
    owner: str | None = None  # username of the collections' owner
    keyword: str = ""  # caption substring (case-insensitive); see keyword_mode
    keyword_mode: str = "filter"  # filter: only matching images; boost: matching ones rank higher
    keyword_boost: float = 0.1  # added to the cosine score of matching images in boost mode


def boost_keyword(*, keyword: str, mode: str, query: str | None) -> str:
    """The keyword a search applies: as given, except that "boost" without one boosts captions
    containing the query text (so "rank higher" alone is never a no-op). Page and API share it."""
    keyword = (keyword or "").strip()
    if mode == "boost" and not keyword:
        return (query or "").strip()[:100]
    return keyword
