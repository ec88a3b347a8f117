"""The generated reference pages match the code (docs/reference/*.md, docs/openapi.json).

Each committed file must equal what :mod:`flashsale.reference` renders now; when the
code changes, regenerate them with ``python -m flashsale.reference --write`` (from the
repository root) and commit the result.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flashsale import reference
from flashsale.api.app import _HTTP_CODES
from flashsale.errors import FlashsaleError
from flashsale.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return reference.render_all()


@pytest.mark.parametrize("path", sorted(reference.FILES))
def test_committed_file_matches_the_code(path: str, rendered: dict[str, str]) -> None:
    target = ROOT / path
    assert target.exists(), f"{path} is missing: run `{reference.REGENERATE}`"
    committed = target.read_text(encoding="utf-8")
    assert committed == rendered[path], (
        f"{path} differs from what the code renders: run `{reference.REGENERATE}` "
        "and commit the result"
    )


def test_rendering_ignores_the_environment(
    monkeypatch: pytest.MonkeyPatch, rendered: dict[str, str]
) -> None:
    monkeypatch.setenv("FLASHSALE_OPENTELEMETRY", "true")
    monkeypatch.setenv("FLASHSALE_DATABASE_URL", "postgresql://elsewhere/db")
    monkeypatch.setenv("FLASHSALE_JWT_TTL_S", "60")
    assert reference.render_all() == rendered


def test_rendering_has_no_absolute_path(rendered: dict[str, str]) -> None:
    for path, text in rendered.items():
        assert str(ROOT) not in text, path
        assert os.path.expanduser("~") not in text, path


def test_every_error_class_has_a_docstring_and_appears_in_errors_md(
    rendered: dict[str, str],
) -> None:
    errors_md = rendered["docs/reference/errors.md"]
    for cls in reference.error_classes():
        assert cls.__doc__ and cls.__doc__.strip(), f"{cls.__name__} has no docstring"
        assert f"`{cls.__name__}`" in errors_md, f"{cls.__name__} missing from errors.md"
        if "code" in cls.__dict__:
            assert f"| `{cls.code}` | {cls.status} |" in errors_md, cls.__name__


def test_every_code_of_the_handlers_is_documented() -> None:
    codes = {e.code: e for e in reference.error_codes()}
    for status, code in _HTTP_CODES.items():
        assert code in codes, f"{code} ({status}) of flashsale.api.app is not documented"
        assert codes[code].status == status
        assert all(codes[code].when), code
    for code in ("VALIDATION_ERROR", "SERVICE_BUSY", "INTERNAL_ERROR"):
        assert code in codes


def test_error_classes_keep_their_codes_and_statuses() -> None:
    classes = {c.__name__: c for c in reference.error_classes() if "code" in c.__dict__}
    seen = {(c.code, c.status) for c in classes.values()}
    assert len({code for code, _ in seen}) == len(seen), "a code with two statuses"
    assert classes["FlashsaleError"] is FlashsaleError


def test_every_setting_has_a_description() -> None:
    for name, info in Settings.model_fields.items():
        assert info.description and info.description.strip(), f"{name} has no description"


def test_check_reports_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert reference.main(["--write", "--root", str(tmp_path)]) == 0
    assert reference.main(["--check", "--root", str(tmp_path)]) == 0
    (tmp_path / "docs/reference/errors.md").write_text("stale\n", encoding="utf-8")
    assert reference.main(["--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "docs/reference/errors.md" in err
    assert reference.REGENERATE in err
