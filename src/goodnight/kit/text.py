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


# Bidirectional embeddings, overrides (U+202A-U+202E) and isolates (U+2066-U+2069) reorder the text shown
# after them: "\u202egnp.exe" displays as "exe.png". A name has no use for them.
BIDI_CONTROLS = frozenset(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))
# Characters that take no space: zero-width space, non-joiner and joiner, word joiner, byte order mark, and
# the left-to-right / right-to-left marks.
INVISIBLE = frozenset("\u200b\u200c\u200d\u2060\ufeff\u200e\u200f")


def _visible(value: str) -> str:
    # Someone reading a feed must be able to see who a name belongs to, and read it in its own order.
    if any(char in BIDI_CONTROLS for char in value):
        raise ValueError("must not contain bidirectional control characters")
    if all(char.isspace() or char in INVISIBLE for char in value):
        raise ValueError("must contain a visible character")
    return value


UnicodeText = Annotated[str, AfterValidator(_encodable)]
DisplayText = Annotated[str, AfterValidator(_printable), AfterValidator(_visible)]
