"""The one sha256 rule: of the app settings, the weight downloads and the template's hook.

A digest is 64 hexadecimal digits in either case (tools print both) and is kept lower-case,
the form ``hashlib`` compares against. Empty means "no check". This module imports only the
standard library: the template's pre-generation hook loads it by path from the checkout.
"""

from __future__ import annotations

import re

SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
SHA256_RULE = "must be 64 hexadecimal digits, or empty to skip the check"


def sha256_problem(value: object) -> str | None:
    """``SHA256_RULE`` when ``value`` breaks it, else None (``""`` and None pass)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not SHA256_RE.fullmatch(value):
        return SHA256_RULE
    return None


def normalize_sha256(value: str | None) -> str | None:
    """The lower-case digest, or None for no check; ``ValueError`` naming the rule."""
    if value is None or not value.strip():
        return None
    if sha256_problem(value.strip()):
        raise ValueError(f"sha256: {value!r} {SHA256_RULE}")
    return value.strip().lower()
