"""Validators for free text arriving from clients."""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator


def _encodable(value: str) -> str:
    # JSON may smuggle in lone UTF-16 surrogates ("\ud800"), which no database or hash function can encode.
    if any(unicodedata.category(char) == "Cs" for char in value):
        raise ValueError("must be valid Unicode text")
    return value


def _printable(value: str) -> str:
    # Control characters (C0, DEL, C1: NUL above all, which PostgreSQL refuses to store, and terminal escapes)
    # have no place in text that other people will see.
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise ValueError("must not contain control characters")
    return value


UnicodeText = Annotated[str, AfterValidator(_encodable)]
DisplayText = Annotated[str, AfterValidator(_printable)]
