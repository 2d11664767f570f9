"""The API's JSON parser: bounded nesting depth, checked before anything recurses.

`json.loads` recurses once per `[` / `{`, so a body of a few thousand brackets raised
RecursionError (a 500, and Django's debug page under DEBUG). `loads_bounded` first measures the
depth with one linear regex scan (strings are skipped whole, so brackets inside them do not
count) and refuses anything deeper than MAX_JSON_DEPTH; only then does it call `json.loads`.
The same function reads JSON carried inside a form field (search `terms` in a multipart body).
"""
from __future__ import annotations

import codecs
import re
from typing import Any

from rest_framework import parsers, serializers
from rest_framework.exceptions import ParseError
from rest_framework.utils import json

MAX_JSON_DEPTH = 32  # the deepest legitimate body (a training config) nests 3 or 4 levels

# A JSON string, escapes included, or a bracket. An unterminated string runs to the end of the
# text: were it allowed to fail, the scan would restart at every later quote and go quadratic.
_LEXEMES = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)


class JSONTooDeep(ValueError):
    pass


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `text` opens more than `limit` arrays/objects inside one another (no recursion)."""
    if text.count("[") + text.count("{") <= limit:  # the usual small body: nothing to scan
        return False
    depth = 0
    for match in _LEXEMES.finditer(text):
        lexeme = match.group()  # a whole string (skipped) or one bracket
        if lexeme in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif lexeme in ("]", "}"):
            depth -= 1
    return False


def loads_bounded(text: str, *, max_depth: int = MAX_JSON_DEPTH, strict: bool = True) -> Any:
    """`json.loads` that raises JSONTooDeep (a ValueError) instead of recursing past `max_depth`."""
    if json_depth_exceeds(text, max_depth):
        raise JSONTooDeep(f"JSON nested deeper than {max_depth} levels.")
    return json.loads(text, parse_constant=json.strict_constant if strict else None)


class JSONParser(parsers.JSONParser):
    """DRF's JSONParser with the depth bound; any error is a 400 `parse_error`."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        encoding = parsers.get_encoding(parser_context or {})
        try:
            text = codecs.getreader(encoding)(stream).read()
            return loads_bounded(text, strict=self.strict)
        except JSONTooDeep as exc:
            raise ParseError(str(exc)) from exc
        except ValueError as exc:  # malformed JSON, NaN/Infinity, undecodable bytes
            raise ParseError(f"JSON parse error - {exc}") from exc


class BoundedJSONField(serializers.JSONField):
    """DRF's JSONField, with the depth bound on JSON sent as a form field's text."""

    def to_internal_value(self, data: Any) -> Any:
        if self.binary or getattr(data, "is_json_string", False):
            text = data.decode() if isinstance(data, bytes) else data
            try:
                return loads_bounded(text)
            except JSONTooDeep as exc:
                raise serializers.ValidationError(str(exc)) from exc
            except (TypeError, ValueError):
                self.fail("invalid")
        return super().to_internal_value(data)
