"""Scrubbing secret values out of text a provider wrote (an error quoting a URL, say)."""

from __future__ import annotations

import base64
from collections.abc import Iterable

from ztdp.errors import PermanentError, ZtdpError

MASK = "[secret]"
SHORTEST = 4  # shorter values would mask ordinary words; such a value protects nothing anyway


def redact(text: str, values: Iterable[str]) -> str:
    """`text` with each value (plain, or base64 as in a Kubernetes Secret) masked, longest
    first so that a value containing another is masked whole."""
    forms = set()
    for value in values:
        if len(value) >= SHORTEST:
            forms.add(value)
            forms.add(base64.b64encode(value.encode()).decode())
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MASK)
    return text


def scrubbed(exc: Exception, values: Iterable[str], what: str) -> Exception:
    """The error to pass on instead of `exc`, its text free of `values`: a ZTDP error keeps
    its class (a temporary one is still retried); anything else becomes permanent."""
    values = list(values)
    if isinstance(exc, ZtdpError):
        clean = redact(exc.detail, values)
        if clean != exc.detail:
            exc.detail = clean
            exc.args = (clean, *exc.args[1:])
        return exc
    return PermanentError(redact(f"{what} failed: {exc!r}", values))
