"""The search and caption page forms (the API has its own serializers; both call one service)."""
from __future__ import annotations

import math
from typing import Any

from django import forms
from django.conf import settings
from django.http import QueryDict

from embeddings.models import Image
from search.selectors import SearchFilters, boost_keyword
from search.services import Cutoff, QueryTerm
from search.services.queries import MAX_TERMS, MAX_TEXT_CHARS, MAX_WEIGHT

PAGE_SIZES = [(24, "24"), (48, "48"), (96, "96")]
TRIM_CHOICES = [("", "keep all"), ("0.05", "close matches only"), ("0.1", "good matches"), ("0.2", "loose")]


class SearchForm(forms.Form):
    q = forms.CharField(required=False, max_length=MAX_TEXT_CHARS, strip=True,
                        label="Describe what you are looking for")
    query = forms.CharField(required=False, max_length=8000, widget=forms.HiddenInput)
    image = forms.FileField(required=False, label="Search with an image")
    image_weight = forms.FloatField(required=False, min_value=-MAX_WEIGHT, max_value=MAX_WEIGHT, initial=1.0)
    image_id = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    collection = forms.CharField(required=False, max_length=100)
    split = forms.ChoiceField(required=False, choices=[("", "any split"), *Image.Split.choices],
                              widget=forms.Select(attrs={"id": "f-split"}))
    has_caption = forms.ChoiceField(required=False, choices=[("", "any"), ("yes", "human caption"),
                                                             ("no", "no human caption")],
                                    widget=forms.Select(attrs={"id": "f-has-caption"}))
    mine = forms.BooleanField(required=False, label="Only my collections")
    keyword = forms.CharField(required=False, max_length=100, label="Caption keyword")
    keyword_mode = forms.ChoiceField(required=False,
                                     choices=[("filter", "must contain"), ("boost", "rank higher")],
                                     widget=forms.Select(attrs={"id": "f-keyword-mode", "title": (
                                         "rank higher: images with a caption containing the keyword "
                                         "(or, with no keyword, the query text) score higher")}))
    trim = forms.ChoiceField(required=False, choices=TRIM_CHOICES, label="Results",
                             widget=forms.Select(attrs={"id": "f-trim"}))
    k = forms.TypedChoiceField(required=False, choices=PAGE_SIZES, coerce=int, empty_value=24, label="Per page",
                               widget=forms.Select(attrs={"id": "f-k"}))
    page = forms.IntegerField(required=False, min_value=1)

    def __init__(self, data: QueryDict | None = None, files: Any = None, **kwargs: Any) -> None:
        super().__init__(data, files, **kwargs)
        self.term_rows = _term_rows(data) if data is not None else []

    def clean_image_weight(self) -> float:
        value = self.cleaned_data.get("image_weight")
        return 1.0 if value is None or not math.isfinite(value) else value

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if len(self.term_rows) > MAX_TERMS:
            raise forms.ValidationError(f"At most {MAX_TERMS} extra terms.")
        for _, weight in self.term_rows:
            if weight is None:
                raise forms.ValidationError(f"Term weights must be numbers between -{MAX_WEIGHT:g} and {MAX_WEIGHT:g}.")
        return data

    # --- what the service needs ---
    def terms(self) -> list[QueryTerm]:
        d = self.cleaned_data
        terms = [QueryTerm(text=d["q"])] if d.get("q") else []
        # clean() rejected rows without a weight, so the filter drops nothing on a valid form.
        terms += [QueryTerm(text=text, weight=weight) for text, weight in self.term_rows if weight is not None]
        if d.get("image_id"):
            terms.append(QueryTerm(image_id=d["image_id"]))
        upload = d.get("image")
        if upload:
            terms.append(QueryTerm(image_bytes=upload.read(settings.LOUPE_MAX_UPLOAD_BYTES + 1),
                                   weight=d["image_weight"]))
        return terms

    def has_query(self) -> bool:
        d = self.cleaned_data
        return bool(d.get("q") or d.get("query") or self.term_rows or d.get("image_id") or d.get("image"))

    def text_only(self) -> bool:
        d = self.cleaned_data
        return bool(d.get("q")) and not (self.term_rows or d.get("image_id") or d.get("image"))

    def filters(self, user: Any) -> SearchFilters:
        d = self.cleaned_data
        has = {"yes": True, "no": False}.get(d.get("has_caption") or "")
        owner = user.get_username() if d.get("mine") and user.is_authenticated else None
        mode = d.get("keyword_mode") or "filter"
        keyword = boost_keyword(keyword=d.get("keyword") or "", mode=mode, query=d.get("q"))
        return SearchFilters(collections=(d["collection"],) if d.get("collection") else (),
                             split=d.get("split") or None, has_human_caption=has, owner=owner,
                             keyword=keyword, keyword_mode=mode)

    FILTER_FIELDS = ("collection", "split", "has_caption", "keyword", "trim", "mine")

    def filters_active(self) -> int:
        """How many filters the request sets (the fold's summary says so; it stays open then)."""
        return sum(1 for name in self.FILTER_FIELDS if (self.data.get(name) or "").strip())

    def cutoff(self) -> Cutoff:
        trim = self.cleaned_data.get("trim")
        return Cutoff(margin=float(trim)) if trim else Cutoff()

    def link_params(self, token: str) -> QueryDict:
        """GET parameters that reproduce this search (text as q, anything else as a token)."""
        d = self.cleaned_data
        params = QueryDict(mutable=True)
        if self.text_only():
            params["q"] = d["q"]
        else:
            params["query"] = token
        for key in ("collection", "split", "has_caption", "keyword", "keyword_mode", "trim"):
            if d.get(key):
                params[key] = d[key]
        if d.get("mine"):
            params["mine"] = "on"
        if d.get("k") and d["k"] != 24:
            params["k"] = str(d["k"])
        return params


def _term_rows(data: QueryDict) -> list[tuple[str, float | None]]:
    """(text, weight) pairs of the extra term rows (t_text / t_weight); empty texts are skipped."""
    texts, weights = data.getlist("t_text"), data.getlist("t_weight")
    rows = []
    for i, text in enumerate(texts):
        text = (text or "").strip()
        if not text:
            continue
        raw = weights[i] if i < len(weights) else "1"
        try:
            weight: float | None = float(raw)
        except (TypeError, ValueError):
            weight = None
        if weight is not None and (not math.isfinite(weight) or abs(weight) > MAX_WEIGHT):
            weight = None
        rows.append((text[:MAX_TEXT_CHARS + 1], weight))
    return rows


class CaptionForm(forms.Form):
    image = forms.FileField(label="Image to caption")
    beam = forms.TypedChoiceField(required=False, coerce=int, empty_value=None,
                                  choices=[("", "tuned (default)"), (1, "greedy (one caption)"), (3, "beam 3"),
                                           (5, "beam 5")])
    n = forms.TypedChoiceField(required=False, choices=[(1, "1"), (3, "3"), (5, "5")], coerce=int, empty_value=3)
