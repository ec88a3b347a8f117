"""Settings refuse the placeholder JWT secret in production (full-stack FastAPI template)."""

from __future__ import annotations

import os
from typing import Literal

import pytest
from pydantic import SecretStr, ValidationError

from flashsale.settings import DEVELOPMENT_JWT_SECRET, Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FLASHSALE_"):
            monkeypatch.delenv(name)


def test_production_refuses_the_placeholder_secret() -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        Settings(environment="production")


def test_production_refuses_the_placeholder_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLASHSALE_ENVIRONMENT", "production")
    monkeypatch.setenv("FLASHSALE_JWT_SECRET", DEVELOPMENT_JWT_SECRET)
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        Settings()


def test_production_accepts_a_real_secret() -> None:
    settings = Settings(environment="production", jwt_secret=SecretStr("s" * 48))
    assert settings.jwt_secret.get_secret_value() == "s" * 48


@pytest.mark.parametrize("environment", ["development", "test"])
def test_placeholder_is_fine_outside_production(
    environment: Literal["development", "test"],
) -> None:
    settings = Settings(environment=environment)
    assert settings.jwt_secret.get_secret_value() == DEVELOPMENT_JWT_SECRET


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASHSALE_DATABASE_URL", "sqlite:///elsewhere.db")
    monkeypatch.setenv("FLASHSALE_PASSWORD_HASH_COST", "4")
    settings = Settings()
    assert settings.database_url == "sqlite:///elsewhere.db"
    assert settings.password_hash_cost == 4


def test_defaults() -> None:
    s = Settings()
    assert s.environment == "development"
    assert s.gate_freshness_s == 1.0
    assert s.order_payment_timeout_s == 600


def test_ranking_window_must_be_whole_buckets() -> None:
    with pytest.raises(ValidationError):
        Settings(ranking_bucket_s=7, ranking_window_s=86_400)
