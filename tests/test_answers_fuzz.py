"""Arbitrary text at every free-text prompt: the bake succeeds with valid files and the text
preserved, or the pre-gen hook refuses it with its one-line message; nothing from an answer
is ever executed."""

from __future__ import annotations

import json
import tempfile
import tomllib
from pathlib import Path

import pytest
from cookiecutter.exceptions import FailedHookException, UndefinedVariableInTemplate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2.exceptions import SecurityError, TemplateError

from repo_tools.baking import bake
from tests.baking import parse_structured_files
from tests.settings_file import settings_literals

FREE_TEXT = ("model_name", "app_name", "description", "author")
JINJA_MARKERS = ("{{", "{%", "{#")
MARKER_NAME = "answer-code-ran"

tricky = st.sampled_from(
    [
        '"',
        "'",
        "\\",
        '"""',
        "\n",
        "\r\n",
        "\t",
        "${{ github.token }}",
        "$(touch " + MARKER_NAME + ")",
        "`touch " + MARKER_NAME + "`",
        "; rm -rf / #",
        "{{ 7 * 7 }}",
        "{% for x in range(3) %}x{% endfor %}",
        "{{ cycler.__init__.__globals__.os.system('touch " + MARKER_NAME + "') }}",
        "{{ ''.__class__.__mro__ }}",
        "</script>",
        "ünïcödé",
        "😀",
        "\u202e",
        "\x00",
        "\x7f",
        "[tool]",
        "key = 1",
        "- yaml: [",
    ]
)
text = st.lists(st.one_of(tricky, st.text(max_size=12)), min_size=1, max_size=5).map("".join)


@pytest.mark.reliability
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(field=st.sampled_from(FREE_TEXT), value=text)
def test_any_free_text_answer_is_safe(field: str, value: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        out = workdir / "out"
        try:
            app = bake(out, {field: value}).root
        except FailedHookException:
            # The pre-gen hook refused it (its one-line message is tested in test_hooks.py);
            # nothing may be left behind.
            assert not out.exists() or not any(out.iterdir())
            return
        except (SecurityError, TemplateError, UndefinedVariableInTemplate):
            # Cookiecutter renders answers given without prompting as Jinja; the sandbox
            # stops code, and broken Jinja stops the bake before anything is written.
            assert any(marker in value for marker in JINJA_MARKERS)
            assert not out.exists() or not any(out.iterdir())
            return
        finally:
            assert not (workdir / MARKER_NAME).exists()
            assert not (Path.cwd() / MARKER_NAME).exists()
        parse_structured_files(app)
        if any(marker in value for marker in JINJA_MARKERS):
            return  # rendered by design (see above): only validity is promised
        # Cookiecutter renders an answer given without a prompt as a Jinja template, and Jinja
        # reads "\r\n" and "\r" as "\n": that is the text the template receives.
        value = value.replace("\r\n", "\n").replace("\r", "\n")
        record = json.loads((app / ".cruft.json").read_text("utf-8"))["context"]["cookiecutter"]
        assert record[field] == value
        manifest = json.loads((app / "config.json").read_text("utf-8"))
        package = app.name.replace("-", "_")
        literals = settings_literals((app / "src" / package / "settings.py").read_text("utf-8"))
        if field == "description":
            assert manifest["description"] == value
            pyproject = tomllib.loads((app / "pyproject.toml").read_text("utf-8"))
            assert pyproject["project"]["description"] == value
        elif field == "author":
            pyproject = tomllib.loads((app / "pyproject.toml").read_text("utf-8"))
            assert pyproject["project"]["authors"][0]["name"] == value
        elif field == "app_name":
            assert manifest["name"] == value
            assert "app_name" not in literals  # config.json (and .cruft.json) hold it
        elif field == "model_name":
            assert literals["model_name"] == value
