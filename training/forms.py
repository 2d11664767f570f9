"""The admin's Retrain form: collections plus the kind's main hyper-parameters, with defaults."""
from __future__ import annotations

import typing
from typing import Any, Literal

from django import forms

from embeddings.models import Collection
from training.services.configs import MAIN_FIELDS, field_spec


def _field_for(annotation: Any, default: Any, label: str) -> forms.Field:
    if typing.get_origin(annotation) is Literal:
        choices = [(c, c) for c in typing.get_args(annotation)]
        return forms.ChoiceField(choices=choices, initial=default, label=label)
    if annotation is bool:
        return forms.BooleanField(initial=default, required=False, label=label)
    if annotation is int:
        return forms.IntegerField(initial=default, label=label)
    if annotation is float:
        return forms.FloatField(initial=default, label=label)
    return forms.CharField(initial="" if default is None else str(default), required=False, label=label)


class RetrainForm(forms.Form):
    collections = forms.ModelMultipleChoiceField(
        queryset=Collection.objects.order_by("name"), widget=forms.CheckboxSelectMultiple,
        help_text="Train on their train split (images with human or imported captions); dev picks the best epoch.")
    extra = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), label="Other settings",
        help_text="One key=value per line, e.g. task.caption_dropout=0.2 (unknown keys are rejected).")

    def __init__(self, *args: Any, kind: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kind = kind
        self.config_names: list[str] = []
        for section, name, label in MAIN_FIELDS[kind]:
            annotation, default = field_spec(kind, section, name)
            key = f"{section}__{name}"
            self.fields[key] = _field_for(annotation, default, label)
            self.config_names.append(key)

    def config_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.config_names]

    def overrides(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for key in self.config_names:
            section, name = key.split("__", 1)
            out.setdefault(section, {})[name] = self.cleaned_data[key]
        return out

    def sets(self) -> list[str]:
        return [line.strip() for line in (self.cleaned_data.get("extra") or "").splitlines() if line.strip()]
