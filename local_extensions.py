"""Jinja filters that turn free-text answers into safe literals of the generated files, the
``sha256`` filter (the runtime's one checksum rule, ``runtime/sly_vos/checksums.py``), and
the template's own source (folder and git commit) for the record a generated app keeps.

``tojson`` is right for JSON, but its ``\\ud83d\\ude00`` surrogate escapes are not valid in
TOML and decode to two lone surrogates in Python source; these filters write any Unicode
text, quotes, backslashes and newlines as an exact literal of the target language.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from types import ModuleType

from jinja2.ext import Extension
from jinja2.sandbox import SandboxedEnvironment, safe_range


def py_str(value: object) -> str:
    """A Python string literal that evaluates to ``str(value)`` exactly, quoted as
    ``ruff format`` would quote it (double quotes unless single ones need fewer escapes), so a
    generated app is formatted whatever its answers. Each character is escaped as ``repr``
    escapes it (control characters, lone surrogates), the chosen quote by a backslash."""
    text = str(value)
    quote = "'" if text.count('"') > text.count("'") else '"'
    return quote + "".join("\\" + c if c == quote else repr(c)[1:-1] for c in text) + quote


def toml_str(value: object) -> str:
    """A TOML basic string for ``str(value)``: control characters and DEL escaped."""
    out = ['"']
    for char in str(value):
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"lone surrogate U+{code:04X} cannot be written to TOML")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def sandbox(environment) -> None:  # noqa: ANN001 - any Jinja environment
    """Turn cookiecutter's environment into a sandboxed one, in place.

    Cookiecutter renders answers given with ``--no-input``, ``extra_context`` or a replay
    file as Jinja templates. In a plain environment an answer such as
    ``{{ cycler.__init__.__globals__.os.popen('id').read() }}`` would run code; in the
    sandbox that attribute access raises ``SecurityError`` and generation stops.
    """
    if environment.sandboxed:
        return
    base = type(environment)
    environment.__class__ = type(f"Sandboxed{base.__name__}", (SandboxedEnvironment, base), {})
    environment.globals["range"] = safe_range
    environment.binop_table = SandboxedEnvironment.default_binop_table.copy()
    environment.unop_table = SandboxedEnvironment.default_unop_table.copy()


def runtime_module(name: str) -> ModuleType:
    """``runtime/sly_vos/<name>.py``, a standard-library-only module, loaded on its own (the
    runtime package's dependencies are the app's, not cookiecutter's)."""
    path = TEMPLATE_DIR / "runtime" / "sly_vos" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"sly_vos_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sha256(value: object) -> str:
    """The digest as the app keeps it (lower case; ``""`` for none). The pre-gen hook has
    already refused anything the rule does not accept."""
    return runtime_module("checksums").normalize_sha256(str(value)) or ""


class LiteralFilters(Extension):
    """Registers ``py_str``, ``toml_str`` and ``sha256``, the globals ``template_dir`` and
    ``template_commit``, and sandboxes the environment."""

    def __init__(self, environment):  # noqa: ANN001 - Jinja's signature
        super().__init__(environment)
        environment.filters["py_str"] = py_str
        environment.filters["toml_str"] = toml_str
        environment.filters["sha256"] = sha256
        sandbox(environment)
        environment.globals["template_dir"] = str(TEMPLATE_DIR)
        environment.globals["template_commit"] = template_commit()


# This file sits at the root of the template checkout cookiecutter (or cruft) renders from;
# the hooks run elsewhere (in the generated folder), so they learn the source from here.
TEMPLATE_DIR = Path(__file__).resolve().parent


def template_commit(directory: Path = TEMPLATE_DIR) -> str | None:
    """The checkout's git HEAD, or None when it is not a git repository (a zip, a copy)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None
