"""Validate the template answers before anything is generated.

Cookiecutter renders this file with the answers, then runs it. Every answer reaches Python
through ``tojson``, so quotes, backslashes or newlines in an answer cannot break or inject
into this script. A bad answer prints one line naming the field, the value and the rule,
and exits 1; cookiecutter then removes the half-made output directory.

The sha256 rule is the runtime's own (``runtime/sly_vos/checksums.py``, loaded by path from
the checkout this app is rendered from, which ``local_extensions.py`` names): the template
accepts exactly the digests the generated app accepts.
"""

from __future__ import annotations

import json
import keyword
import re
import sys
from types import ModuleType
from typing import Any, Callable
from urllib.parse import urlsplit

ANSWERS: dict[str, Any] = json.loads({{ cookiecutter | jsonify | tojson }})
TEMPLATE_DIR: str = {{ template_dir | tojson }}

SLUG_RE = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
VERSION_RE = re.compile(r"^[0-9]+(?:\.[0-9]+){1,3}$")
FILENAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Docker reference without tag: optional registry host[:port], then lower-case path parts.
DOCKER_IMAGE_RE = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
# A Docker tag is at most 128 characters of [A-Za-z0-9_.-], not starting with . or -.
DOCKER_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")

# Characters a Dockerfile ARG default or a shell word would interpret.
DOCKER_UNSAFE = frozenset("$\"'`\\")

Rule = Callable[[Any], "str | None"]


def _runtime_module(name: str) -> ModuleType:
    """``runtime/sly_vos/<name>.py`` of the template checkout, loaded as
    ``local_extensions.runtime_module`` loads it for the templates (cookiecutter imported
    that file from the checkout already; this script runs elsewhere, so it asks by path)."""
    if TEMPLATE_DIR not in sys.path:
        sys.path.insert(0, TEMPLATE_DIR)
    from local_extensions import runtime_module

    return runtime_module(name)


checksums = _runtime_module("checksums")


def _single_line(max_len: int) -> Rule:
    def check(value: Any) -> str | None:
        if not isinstance(value, str) or not value.strip():
            return "must be a non-empty text"
        if "\n" in value or "\r" in value:
            return "must be a single line"
        if len(value) > max_len:
            return f"must be at most {max_len} characters"
        return None

    return check


def _free_text(max_len: int) -> Rule:
    def check(value: Any) -> str | None:
        if not isinstance(value, str) or not value.strip():
            return "must be a non-empty text"
        if len(value) > max_len:
            return f"must be at most {max_len} characters"
        if any(ord(c) < 32 and c not in "\n\t" for c in value):
            return "must not contain control characters"
        return None

    return check


def _identifier(value: Any) -> str | None:
    if not isinstance(value, str) or not value.isidentifier() or not value.isascii():
        return "must be an ASCII Python identifier (letters, digits, _; not starting with a digit)"
    if keyword.iskeyword(value) or keyword.issoftkeyword(value):
        return "must not be a Python keyword"
    return None


def _slug(value: Any) -> str | None:
    if not isinstance(value, str) or not SLUG_RE.match(value):
        return "must be lower-case letters, digits and single dashes, starting with a letter"
    if len(value) > 64:
        return "must be at most 64 characters"
    return None


def _version(value: Any) -> str | None:
    if not isinstance(value, str) or not VERSION_RE.match(value):
        return "must be a version of 2 to 4 dot-separated numbers, e.g. 6.74.51"
    return None


def _url(value: Any) -> str | None:
    if value == "":
        return None  # no weights to download: the starters need none
    if not isinstance(value, str) or any(c.isspace() for c in value):
        return "must be a URL without spaces"
    if any(c in DOCKER_UNSAFE for c in value):
        return "must not contain $, quotes, backslashes or backticks (it is a Docker build arg)"
    parts = urlsplit(value)
    if parts.scheme not in ("https", "file"):
        return "must use the https:// or file:// scheme"
    if parts.scheme == "https" and not parts.netloc:
        return "must name a host"
    name = parts.path.rstrip("/").rsplit("/", 1)[-1]
    if not FILENAME_RE.match(name):
        return "must end in a file name of letters, digits, '.', '_' or '-'"
    return None


def _sha256(value: Any) -> str | None:
    if not isinstance(value, str):
        return checksums.SHA256_RULE
    return checksums.sha256_problem(value)


def _port(value: Any) -> str | None:
    try:
        port = int(str(value), 10)
    except ValueError:
        return "must be a whole number"
    if not 1 <= port <= 65535:
        return "must be between 1 and 65535"
    return None


def _docker_image(value: Any) -> str | None:
    if not isinstance(value, str) or not DOCKER_IMAGE_RE.match(value) or len(value) > 255:
        return "must be a Docker image name without tag, e.g. my-org/serve-xmem"
    return None


def _docker_tag(value: Any) -> str | None:
    if _version(value) is not None or not DOCKER_TAG_RE.match(str(value)):
        return "must be a version like 1.0.0 (it is also the Docker image tag)"
    return None


def _boolean(value: Any) -> str | None:
    if not isinstance(value, bool):
        return "must be true or false"
    return None


RULES: dict[str, Rule] = {
    "model_name": _single_line(64),
    "app_name": _single_line(100),
    "app_slug": _slug,
    "__package_name": _identifier,
    "__class_name": _identifier,
    "description": _free_text(500),
    "author": _single_line(100),
    "weights_url": _url,
    "weights_sha256": _sha256,
    "torch_version": _version,
    "sdk_version": _version,
    "instance_version": _version,
    "docker_image": _docker_image,
    "app_version": _docker_tag,
    "port": _port,
    "include_github_workflows": _boolean,
}


def validate(answers: dict[str, Any]) -> list[str]:
    """Return one message per broken rule: ``<field>: <value!r> <rule>``."""
    errors = []
    for field, rule in RULES.items():
        value = answers.get(field)
        problem = rule(value)
        if problem:
            errors.append(f"{field}: {value!r} {problem}")
    if answers.get("weights_sha256") and not answers.get("weights_url"):
        errors.append(
            f"weights_sha256: {answers['weights_sha256']!r} needs a weights_url to check "
            "(leave both empty for no weights)"
        )
    return errors


def main() -> int:
    errors = validate(ANSWERS)
    for line in errors:
        print(f"ERROR: {line}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
