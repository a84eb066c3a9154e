"""QR codes of shares (ISO/IEC 18004, rendered by segno).

A share up to ``INLINE_MAX_BYTES`` goes into the QR whole, so that a verifier can check it
offline; 1,500 bytes in byte mode at error correction L is a version-28 symbol (129 modules),
about the densest a phone reads reliably off another phone's screen (level L suffices: a screen
does not smudge). A larger share is put in the QR as ``eidshare:<id>`` and redeemed online.
"""

from __future__ import annotations

import io
from typing import Literal

import segno

INLINE_MAX_BYTES = 1500

ImageKind = Literal["png", "svg"]
MEDIA_TYPES: dict[ImageKind, str] = {"png": "image/png", "svg": "image/svg+xml"}


def fits_inline(payload: str) -> bool:
    return len(payload.encode("utf-8")) <= INLINE_MAX_BYTES


def render(payload: str, kind: ImageKind) -> bytes:
    # boost_error: a higher error-correction level when it fits the same symbol version.
    code = segno.make(payload, error="l", boost_error=True, micro=False)
    out = io.BytesIO()
    if kind == "png":
        code.save(out, kind="png", scale=4, border=4)
    else:
        code.save(out, kind="svg", scale=4, border=4, xmldecl=False, svgns=True)
    return out.getvalue()
