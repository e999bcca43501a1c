"""The repository's own pins agree: torch and the SDK in cookiecutter.json, the dev
requirements, the setup script and the reference app's answers."""

from __future__ import annotations

import json
import re

from repo_tools import REPO_ROOT
from repo_tools.reference import reference_answers


def requirement_pins(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def test_torch_and_sdk_pins_have_one_value_everywhere() -> None:
    answers = json.loads((REPO_ROOT / "cookiecutter.json").read_text("utf-8"))
    dev = requirement_pins((REPO_ROOT / "requirements-dev.txt").read_text("utf-8"))
    setup = (REPO_ROOT / "scripts" / "setup.sh").read_text("utf-8")
    torch_default = re.search(r"TORCH_VERSION=\$\{TORCH_VERSION:-([0-9.]+)\}", setup)
    assert torch_default, "scripts/setup.sh must pin torch as TORCH_VERSION=${TORCH_VERSION:-X}"
    reference = reference_answers()
    torch = {
        "cookiecutter.json": answers["torch_version"],
        "scripts/setup.sh": torch_default.group(1),
        "reference_xmem answers": reference["torch_version"],
    }
    sdk = {
        "cookiecutter.json": answers["sdk_version"],
        "requirements-dev.txt": dev["supervisely"],
        "reference_xmem answers": reference["sdk_version"],
    }
    assert len(set(torch.values())) == 1, torch
    assert len(set(sdk.values())) == 1, sdk
    assert "torch" not in dev, "torch is installed first by scripts/setup.sh, with its pin"
