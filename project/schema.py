"""OpenAPI wiring: the errors every operation can answer, and links for stateful clients.

`AutoSchema` adds to each operation the error responses that come from the framework around
the view rather than from the view itself, all in the one error shape (project/exceptions.py):

- 400 where the operation takes query parameters or a body (validation, a parse error);
- 401 everywhere: no credentials where they are needed, or a bad token (refused before any view
  runs), with `WWW-Authenticate: Token`;
- 403 everywhere: signed in but not allowed (another user's object, staff only, no CSRF token);
- 404 where the path has an id, or the list is paginated (a page past the end);
- 413 and 415 where there is a body (size cap, unsupported content type);
- 429 everywhere (throttles; the token endpoint's lockout), with `Retry-After`.

What only some views answer (503 without a model or index, 409 conflicts) they document
themselves with `extend_schema(responses=...)`, using ERROR / UNAVAILABLE / CONFLICT below.

`links_hook` adds OpenAPI links from the responses that produce ids to the operations that take
them, so schemathesis' stateful phase runs real sequences (upload -> get -> delete, search ->
caption -> accept, start -> cancel, promote -> switch progress).
"""
from __future__ import annotations

from typing import Any

from drf_spectacular import openapi
from drf_spectacular.drainage import warn
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ErrorBody(serializers.Serializer):
    code = serializers.CharField(help_text="stable machine-readable code, e.g. invalid, not_found, throttled")
    message = serializers.CharField()
    fields = serializers.DictField(required=False, help_text="per-field messages (validation errors)")


class Error(serializers.Serializer):
    error = ErrorBody()


ERROR = Error
UNAVAILABLE = OpenApiResponse(Error, description="No active model (`model_unavailable`) or the search index is "
                                                 "being rebuilt (`index_rebuilding`); retry in a moment.")
CONFLICT = OpenApiResponse(Error, description="Conflicts with the current state (`conflict` and more specific codes).")

_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer", "minimum": 0}, "required": True,
                                "description": "seconds after which one more request is let through"}}
_DESCRIPTIONS = {
    "400": "Invalid parameters or body (`invalid`, `parse_error`, ...); `fields` names the culprits.",
    "401": "Not logged in, or a bad token (`not_authenticated`, `authentication_failed`); the answer carries "
           "`WWW-Authenticate: Token`.",
    "403": "Signed in but not allowed (`permission_denied`), or a session write without its CSRF token.",
    "404": "No such object, or not one you may see (`not_found`).",
    "413": "Request body too large (`too_large`).",
    "415": "Unsupported content type (`unsupported_media_type`).",
    "429": "Too many requests (`throttled`) or login attempts (`locked_out`); see `Retry-After`.",
}


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's AutoSchema plus the framework-level error responses (module docstring)."""

    def _error_codes(self, operation: dict[str, Any]) -> list[str]:
        params = operation.get("parameters", [])
        has_body = "requestBody" in operation
        codes = []
        if has_body or any(p["in"] == "query" for p in params):
            codes.append("400")
        codes += ["401", "403"]
        paginated = self.method == "GET" and self._get_paginator() is not None and self._is_list_view()
        if paginated or any(p["in"] == "path" for p in params):
            codes.append("404")
        if has_body:
            codes += ["413", "415"]
        codes.append("429")
        return codes

    def get_operation(self, path: str, path_regex: str, path_prefix: str, method: str,
                      registry: Any) -> dict[str, Any] | None:
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        responses = operation["responses"]
        for code in self._error_codes(operation):
            if code in responses:
                continue
            responses[code] = self._get_response_for_code(OpenApiResponse(Error, description=_DESCRIPTIONS[code]),
                                                          code, media_types=["application/json"])
        responses["429"]["headers"] = {**_RETRY_AFTER, **responses["429"].get("headers", {})}
        operation["responses"] = dict(sorted(responses.items()))
        return operation


# (from operationId, status, link name, to operationId, {parameter: runtime expression})
_IMAGE_OPS = ("v1_images_retrieve", "v1_images_destroy", "v1_images_labels_retrieve", "v1_images_similar_retrieve",
              "v1_images_explain_retrieve")
LINKS: list[tuple[str, str, str, str, dict[str, str]]] = [
    *[("v1_images_create", code, target, target, {"id": "$response.body#/id"})
      for code in ("200", "201") for target in _IMAGE_OPS],
    *[("v1_images_list", "200", target, target, {"id": "$response.body#/results/0/id"}) for target in _IMAGE_OPS],
    *[(source, "200", target, target, {"id": "$response.body#/results/0/image_id"})
      for source in ("search_images", "search_images_post", "v1_images_similar_retrieve") for target in _IMAGE_OPS],
    *[(source, "200", "next_page", "search_images", {"query": "$response.body#/query"})
      for source in ("search_images", "search_images_post")],
    *[(source, "200", "accept_caption", "v1_captions_partial_update", {"id": "$response.body#/results/0/caption_id"})
      for source in ("search_captions", "search_captions_post")],
    ("v1_captions_create", "200", "accept_caption", "v1_captions_partial_update",
     {"id": "$response.body#/captions/0/id"}),
    ("v1_collections_create", "201", "images_in_collection", "v1_images_list", {"collection": "$response.body#/name"}),
    ("v1_collections_list", "200", "images_in_collection", "v1_images_list",
     {"collection": "$response.body#/results/0/name"}),
    *[("training_runs_start", "202", target, target, {"id": "$response.body#/id"})
      for target in ("v1_training_runs_retrieve", "v1_training_runs_cancel_create")],
    *[("v1_training_runs_list", "200", target, target, {"id": "$response.body#/0/id"})
      for target in ("v1_training_runs_retrieve", "v1_training_runs_cancel_create")],
    *[("v1_models_list", "200", target, target, {"id": "$response.body#/0/id"})
      for target in ("v1_models_promote_create", "v1_models_rollback_create")],
    *[(source, "202", "switch_progress", "v1_model_switches_retrieve", {"id": "$response.body#/id"})
      for source in ("v1_models_promote_create", "v1_models_rollback_create")],
]


def links_hook(result: dict[str, Any], generator: Any, **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: attach LINKS to the responses they start from."""
    operations = {op["operationId"]: op for item in result.get("paths", {}).values()
                  for op in item.values() if isinstance(op, dict) and "operationId" in op}
    for source, code, name, target, parameters in LINKS:
        response = operations.get(source, {}).get("responses", {}).get(code)
        if response is None or target not in operations:
            warn(f"schema link {source} {code} -> {target}: no such operation or response")
            continue
        response.setdefault("links", {})[name] = {"operationId": target, "parameters": parameters}
    return result
