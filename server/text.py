# ruff: noqa: RUF002, RUF003  (the docstring names the letters it folds)
"""The one rule by which stored names and search terms are compared.

PostgreSQL's ``lower()`` and Python's ``str.lower()`` disagree on some letters
(Turkish dotted capital I, final sigma, German sharp s, ligatures, full-width
letters, combining sequences), and PostgreSQL's own answer depends on its
version and collation provider (``casefold()`` only exists from 18). So the
fold is done here, in Python, once: on the way in for every stored search key
(``clients.given_key``, ``family_key``, ``email_key``, written in the same
statement as the column they fold) and for every search term. The database
only concatenates and compares the folded strings, byte for byte.

:func:`fold` is NFKC, then full case folding, then NFKC again (case folding
can un-normalise: ``"ǰ".casefold()`` decomposes), with two refinements:

- Turkish and Azeri dotted and dotless i fold to plain i: Unicode's case
  folding keeps a combining dot on the capital dotted I (``"İ".casefold() ==
  "i\\u0307"``) and leaves the dotless ı alone, though ``"ı".upper() == "I"``,
  so ``Yılmaz`` would not be found by ``YILMAZ``; now ``İstanbul``,
  ``ISTANBUL``, ``istanbul``, ``Yılmaz`` and ``yilmaz`` all match;
- runs of white space become one space and the ends are stripped, so that
  ``"Anna  Maria"`` is found by ``"anna maria"``.

It is idempotent (``fold(fold(s)) == fold(s)``), which a test checks.
Changing it means a migration that re-folds every stored key.
"""

from __future__ import annotations

import unicodedata

__all__ = ["fold", "successor"]

_MAX_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)
_TURKIC_I = {0x0131: "i"}  # dotless ı


def fold(text: str) -> str:
    """The comparison form of ``text``: NFKC + case folding, white space collapsed."""
    if text.isascii():
        # The common case, and exactly what the general path gives for ASCII.
        return " ".join(text.lower().split())
    folded = unicodedata.normalize("NFKC", text).casefold().translate(_TURKIC_I)
    folded = folded.replace("i\u0307", "i")
    return " ".join(unicodedata.normalize("NFKC", folded).split())


def successor(prefix: str) -> str | None:
    """The least string greater than every string that starts with ``prefix``,
    in code point order (= UTF-8 byte order = collation "C"), or None when no
    such string exists (``prefix`` is empty or all U+10FFFF).

    The last code point below U+10FFFF is incremented, skipping the surrogates
    (U+D7FF is followed by U+E000: surrogates are not characters and cannot
    reach PostgreSQL); trailing U+10FFFF are dropped first.
    """
    end = len(prefix)
    while end and ord(prefix[end - 1]) == _MAX_CODE_POINT:
        end -= 1
    if not end:
        return None
    nxt = ord(prefix[end - 1]) + 1
    if nxt in _SURROGATES:
        nxt = _SURROGATES.stop
    return prefix[: end - 1] + chr(nxt)
