"""The one way user text is cleaned: captions, queries and file names shown back."""
from __future__ import annotations

import unicodedata

from project.exceptions import ApplicationError

MAX_CAPTION_CHARS = 1000


def strip_controls(text: str) -> str:
    """Control and format characters dropped (tab and newline kept), white space folded."""
    return " ".join("".join(ch for ch in str(text) if unicodedata.category(ch)[0] != "C" or ch in " \t\n").split())


def clean_caption_text(text: str | None) -> str:
    """Strip, fold white space, drop control characters; reject over-long text."""
    if text is None:
        return ""
    text = strip_controls(text)
    if len(text) > MAX_CAPTION_CHARS:
        raise ApplicationError(
            f"Caption is longer than {MAX_CAPTION_CHARS} characters.", fields={"caption": ["Too long."]}
        )
    return text


def safe_source_name(name: str | None) -> str:
    """A display-only version of the client's file name (never used as a path)."""
    if not name:
        return ""
    name = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] not in ("C",))
    return name[:255]
