"""The hooks: negative tests of every pre-gen rule through the real cookiecutter CLI, and
unit tests of the rendered hook modules."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from cookiecutter.environment import StrictEnvironment
from cookiecutter.generate import generate_context
from cookiecutter.prompt import prompt_for_config

from tests.baking import REPO_ROOT

COOKIECUTTER = Path(sys.executable).parent / "cookiecutter"

# field, bad value, words the one-line message must contain
BAD_ANSWERS: list[tuple[str, str, str]] = [
    ("app_slug", "Bad Slug", "lower-case letters"),
    ("app_slug", "-leading-dash", "lower-case letters"),
    ("model_name", "3D", "__class_name"),
    ("model_name", "", "non-empty"),
    ("app_name", "two\nlines", "single line"),
    ("author", "", "non-empty"),
    ("weights_url", "http://example.com/w.pth", "https:// or file://"),
    ("weights_url", "ftp://example.com/w.pth", "https:// or file://"),
    ("weights_url", "https://example.com/", "file name"),
    ("weights_url", "https://example.com/$HOME/w.pth", "Docker build arg"),
    ("weights_url", 'https://example.com/"w".pth', "Docker build arg"),
    ("weights_sha256", "abc123", "64 hexadecimal digits"),
    ("weights_sha256", "G" * 64, "64 hexadecimal digits"),
    ("weights_sha256", "a" * 63 + " ", "64 hexadecimal digits"),
    ("weights_sha256", "a" * 64, "needs a weights_url"),
    ("port", "0", "between 1 and 65535"),
    ("port", "70000", "between 1 and 65535"),
    ("port", "eighty", "whole number"),
    ("sdk_version", "latest", "dot-separated numbers"),
    ("torch_version", "2", "dot-separated numbers"),
    ("instance_version", "6.x", "dot-separated numbers"),
    ("app_version", "v1", "version like 1.0.0"),
    ("docker_image", "My_Org/App", "Docker image name"),
    ("docker_image", "org/app:1.0", "Docker image name"),
]


def run_cli(tmp_path: Path, **answers: str) -> subprocess.CompletedProcess[str]:
    args = [f"{key}={value}" for key, value in answers.items()]
    return subprocess.run(
        [str(COOKIECUTTER), str(REPO_ROOT), "--no-input", "-o", str(tmp_path), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    BAD_ANSWERS,
    ids=[f"{f}={v!r}"[:40] for f, v, _ in BAD_ANSWERS],
)
def test_pre_gen_refuses_bad_answer(tmp_path: Path, field: str, value: str, rule: str) -> None:
    result = run_cli(tmp_path, **{field: value})
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR: ")]
    assert errors, result.stderr
    line = next((e for e in errors if rule in e), None)
    assert line is not None, errors
    if not field.startswith("model_name"):
        assert line.startswith(f"ERROR: {field}: ")
        assert repr(value)[:20].strip("'") in line
    assert list(tmp_path.iterdir()) == [], "no output directory may be left behind"


def test_cli_bake_with_defaults_prints_next_steps(tmp_path: Path) -> None:
    result = run_cli(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Next steps" in result.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["serve-myvos"]


def test_answers_given_as_jinja_cannot_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    payload = "{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}"
    result = run_cli(tmp_path / "out", description=payload)
    assert result.returncode != 0
    assert "SecurityError" in result.stderr
    assert not marker.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ---- unit tests of the rendered hooks -------------------------------------------------


def render_hook(name: str, extra_context: dict[str, Any] | None = None) -> types.ModuleType:
    """Render ``hooks/<name>.py`` like cookiecutter does and import it as a module."""
    context = generate_context(
        context_file=str(REPO_ROOT / "cookiecutter.json"), extra_context=extra_context or {}
    )
    context["cookiecutter"] = prompt_for_config(context, no_input=True)
    env = StrictEnvironment(context=context, keep_trailing_newline=True)
    source = env.from_string((REPO_ROOT / "hooks" / f"{name}.py").read_text("utf-8"))
    module = types.ModuleType(f"rendered_{name}")
    exec(compile(source.render(**context), f"hooks/{name}.py", "exec"), module.__dict__)  # noqa: S102
    return module


@pytest.fixture(scope="module")
def pre_gen() -> types.ModuleType:
    return render_hook("pre_gen_project")


def test_pre_gen_accepts_the_defaults(pre_gen: types.ModuleType) -> None:
    assert pre_gen.validate(pre_gen.ANSWERS) == []


@pytest.mark.parametrize(("field", "value", "rule"), BAD_ANSWERS, ids=[b[0] for b in BAD_ANSWERS])
def test_pre_gen_validate_unit(
    pre_gen: types.ModuleType, field: str, value: str, rule: str
) -> None:
    answers = dict(pre_gen.ANSWERS)
    if field == "model_name":
        field, value = "__class_name", f"{value}Tracker" if value else ""
        if not value:
            answers["model_name"] = ""
    answers[field] = value
    errors = pre_gen.validate(answers)
    assert errors and all("\n" not in e for e in errors)
    assert any(rule in e for e in errors), errors


def test_pre_gen_accepts_upper_case_sha256_which_the_app_keeps_lower_case(
    pre_gen: types.ModuleType,
) -> None:
    """The runtime's one rule (sly_vos.checksums): either case, kept lower-case."""
    import local_extensions

    digest = "AbCdEf0123456789" * 4
    answers = dict(pre_gen.ANSWERS, weights_sha256=digest, weights_url="https://x.org/w.pth")
    assert pre_gen.validate(answers) == []
    assert local_extensions.sha256(digest) == digest.lower()
    assert local_extensions.sha256("") == ""


def test_pre_gen_rejects_keyword_package(pre_gen: types.ModuleType) -> None:
    answers = dict(pre_gen.ANSWERS, __package_name="import", __class_name="class")
    errors = pre_gen.validate(answers)
    assert any(e.startswith("__package_name: 'import'") and "keyword" in e for e in errors)
    assert any(e.startswith("__class_name: 'class'") and "keyword" in e for e in errors)


def test_pre_gen_answers_survive_quotes() -> None:
    hostile = "a \"quoted\" \\ value\n with 'both' and ünï 😀"
    module = render_hook("pre_gen_project", {"description": hostile})
    assert module.ANSWERS["description"] == hostile


def test_post_gen_records_only_visible_answers() -> None:
    module = render_hook("post_gen_project", {"model_name": "XMem"})
    recorded = module.recorded_answers(module.ANSWERS)
    assert recorded["model_name"] == "XMem"
    assert all(not key.startswith("_") for key in recorded)
    json.dumps(recorded)


def test_post_gen_removal_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = render_hook("post_gen_project")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / "keep.txt").write_text("x")
    module.remove_unchosen([(True, [".github"]), (False, ["keep.txt"])])
    assert not (tmp_path / ".github").exists()
    assert (tmp_path / "keep.txt").exists()


def test_post_gen_copies_the_runtime_and_refuses_a_checkout_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = render_hook("post_gen_project")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    with pytest.raises(SystemExit, match="the template's runtime is missing"):
        module.copy_runtime(tmp_path / "not-a-template")
    assert not (tmp_path / "src" / "sly_vos").exists()
    module.copy_runtime(REPO_ROOT)
    copied = tmp_path / "src" / "sly_vos"
    assert not copied.is_symlink() and (copied / "__init__.py").is_file()
    assert not list(copied.rglob("__pycache__"))
    source = REPO_ROOT / "runtime" / "sly_vos" / "app.py"
    assert (copied / "app.py").read_bytes() == source.read_bytes()
