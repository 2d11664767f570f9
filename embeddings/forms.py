"""Forms of the collections page (the services validate again; these shape the HTML)."""
from __future__ import annotations

from django import forms


class CollectionForm(forms.Form):
    name = forms.CharField(max_length=100)
    description = forms.CharField(max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 2}))
    is_public = forms.BooleanField(required=False, label="Public (anyone can see and search it)")
