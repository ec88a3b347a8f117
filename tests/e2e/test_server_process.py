"""``ServerProcess``, the harness of the e2e tests and the demo: start, health, stop."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from flashsale.demo.server import ServerError, ServerProcess

pytestmark = [pytest.mark.e2e]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "FLASHSALE_DATABASE_URL": f"sqlite:///{tmp_path / 'flashsale.db'}",
        "FLASHSALE_PASSWORD_HASH_COST": "4",
        **extra,
    }


def test_start_serves_health_and_stop_leaves_no_process(tmp_path: Path) -> None:
    server = ServerProcess(_env(tmp_path), workers=2, log_path=tmp_path / "server.log")
    with server:
        assert server.running
        response = httpx.get(f"{server.base_url}/healthz", timeout=5)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        group = server.pid
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.killpg(group, 0)  # the master and every worker are gone
    assert server.stop() == server.returncode  # idempotent
    assert (tmp_path / "server.log").read_text()


def test_start_failure_names_the_log_tail(tmp_path: Path) -> None:
    # An out-of-range setting makes `flashsale serve` exit before it listens.
    env = _env(tmp_path, FLASHSALE_PASSWORD_HASH_COST="99")
    server = ServerProcess(env, workers=1, log_path=tmp_path / "server.log", startup_timeout=30)
    with pytest.raises(ServerError, match="exited with code") as info:
        server.start()
    assert "last lines of" in str(info.value)
    assert "password_hash_cost" in str(info.value).lower()
    assert not server.running
