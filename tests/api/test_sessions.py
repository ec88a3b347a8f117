"""Sessions: refresh tokens (rotation, reuse detection), logout and the password change
(docs/api.md, "Authentication"; docs/rules.md, "Accounts and tokens")."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
from datetime import timedelta
from typing import Any

import anyio
import httpx
import jwt
import pytest
from sqlalchemy import text

from flashsale.api.background import Maintenance
from flashsale.auth import sessions
from flashsale.auth.security import Principal, create_access_token
from flashsale.db.engine import make_sync_engine
from flashsale.db.writer import Tx
from flashsale.errors import RefreshTokenReused, WrongCurrentPassword
from flashsale.settings import Settings

from .support import PASSWORD, PREFIX, Api, StartApp, User, expect, utc, writer_ops

pytestmark = pytest.mark.anyio

NEW_PASSWORD = "N3w-Passw0rd!"


async def _login(api: Api, email: str, password: str = PASSWORD) -> dict[str, Any]:
    r = await api.client.post(
        PREFIX + "/auth/token", data={"username": email, "password": password}
    )
    body: dict[str, Any] = expect(r, 200)
    return body


async def _refresh(api: Api, token: str) -> httpx.Response:
    return await api.post("/auth/refresh", json={"refresh_token": token})


async def _logout(api: Api, token: str) -> httpx.Response:
    return await api.post("/auth/logout", json={"refresh_token": token})


async def _change_password(api: Api, user: User, current: str, new: str) -> httpx.Response:
    return await api.client.put(
        PREFIX + "/me/password",
        headers=user.headers,
        json={"current_password": current, "new_password": new},
    )


def _bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def _rows(api: Api, statement: str, **params: Any) -> list[Any]:
    engine = make_sync_engine(api.db_url, immediate=False)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(statement), params))
    finally:
        engine.dispose()


def _family(api: Api, refresh_token: str) -> list[Any]:
    """The rows of the family of ``refresh_token``, oldest first."""
    return _rows(
        api,
        "SELECT token_hash, used_at, revoked_at FROM refresh_tokens WHERE family_id = "
        "(SELECT family_id FROM refresh_tokens WHERE token_hash = :h) ORDER BY id",
        h=hashlib.sha256(refresh_token.encode()).hexdigest(),
    )


def test_access_tokens_last_15_minutes_by_default() -> None:
    settings = Settings()
    assert settings.jwt_ttl_s == 900
    assert settings.refresh_ttl_s == 14 * 86400


async def test_token_returns_a_refresh_token_stored_only_hashed(api: Api) -> None:
    user = await api.user()
    body = await _login(api, user.email)
    assert set(body) == {
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "refresh_expires_in",
    }
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == api.state.settings.jwt_ttl_s == 900
    assert body["refresh_expires_in"] == api.state.settings.refresh_ttl_s
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 900
    token = body["refresh_token"]
    assert isinstance(token, str) and len(token) >= 43
    rows = _rows(api, "SELECT * FROM refresh_tokens WHERE user_id = :u", u=user.user_id)
    assert len(rows) == 2  # api.user() logged in once already: two families
    assert len({row.family_id for row in rows}) == 2
    assert token not in repr(rows)  # the text itself is never stored
    (row,) = [row for row in rows if row.token_hash == hashlib.sha256(token.encode()).hexdigest()]
    assert row.used_at is None and row.revoked_at is None
    expect(await api.client.get(PREFIX + "/me/wallet", headers=_bearer(body["access_token"])), 200)


async def test_refresh_rotates_within_the_family(api: Api) -> None:
    user = await api.user()
    first = await _login(api, user.email)
    current = first["refresh_token"]
    seen = {current}
    for _ in range(3):
        body = expect(await _refresh(api, current), 200)
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == api.state.settings.jwt_ttl_s
        assert body["refresh_expires_in"] == api.state.settings.refresh_ttl_s
        assert body["refresh_token"] not in seen
        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert claims["sub"] == str(user.user_id) and claims["role"] == "customer"
        wallet = expect(
            await api.client.get(PREFIX + "/me/wallet", headers=_bearer(body["access_token"])),
            200,
        )
        assert wallet["user_id"] == user.user_id
        current = body["refresh_token"]
        seen.add(current)
    family = _family(api, current)
    assert len(family) == 4
    assert [row.used_at is not None for row in family] == [True, True, True, False]
    assert all(row.revoked_at is None for row in family)


async def test_a_used_token_again_revokes_its_whole_family(api: Api) -> None:
    user = await api.user()
    stolen = (await _login(api, user.email))["refresh_token"]
    other_login = (await _login(api, user.email))["refresh_token"]
    newest = expect(await _refresh(api, stolen), 200)["refresh_token"]
    newest = expect(await _refresh(api, newest), 200)["refresh_token"]
    # The thief (or the victim) presents the used token: reuse.
    expect(await _refresh(api, stolen), 401, "REFRESH_TOKEN_REUSED")
    assert all(row.revoked_at is not None for row in _family(api, newest))
    # The newest token of that family is dead too, and says why.
    before = api.snapshot()
    expect(await _refresh(api, newest), 401, "REFRESH_TOKEN_REVOKED")
    expect(await _refresh(api, stolen), 401, "REFRESH_TOKEN_REVOKED")
    assert api.snapshot() == before
    # Another login (another family) of the same user is untouched.
    expect(await _refresh(api, other_login), 200)


async def test_unknown_expired_and_malformed_tokens(api: Api, subtests: pytest.Subtests) -> None:
    user = await api.user()
    token = (await _login(api, user.email))["refresh_token"]
    api.sql(
        "UPDATE refresh_tokens SET expires_at = :t WHERE user_id = :u",
        t=utc(seconds=-1).replace(tzinfo=None),
        u=user.user_id,
    )
    before = api.snapshot()
    expect(await _refresh(api, token), 401, "REFRESH_TOKEN_EXPIRED")
    expect(await _refresh(api, secrets.token_urlsafe(32)), 401, "REFRESH_TOKEN_INVALID")
    expect(await _refresh(api, "x"), 401, "REFRESH_TOKEN_INVALID")
    bad_bodies: list[Any] = [
        {},
        {"refresh_token": ""},
        {"refresh_token": "x" * 257},
        {"refresh_token": 12345},
        {"refresh_token": None},
        ["refresh_token"],
    ]
    for path in ("/auth/refresh", "/auth/logout"):
        for payload in bad_bodies:
            with subtests.test(path=path, payload=payload):
                expect(await api.post(path, json=payload), 422, "VALIDATION_ERROR")
        with subtests.test(path=path, payload="not json"):
            r = await api.client.post(
                PREFIX + path, content=b"{", headers={"Content-Type": "application/json"}
            )
            expect(r, 422, "VALIDATION_ERROR")
    assert api.snapshot() == before


async def test_a_refresh_takes_the_user_s_current_role(api: Api) -> None:
    user = await api.user()
    token = (await _login(api, user.email))["refresh_token"]
    api.sql("UPDATE users SET role = 'admin' WHERE id = :u", u=user.user_id)
    body = expect(await _refresh(api, token), 200)
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["role"] == "admin"


async def test_logout_revokes_the_family(api: Api) -> None:
    user = await api.user()
    first = (await _login(api, user.email))["refresh_token"]
    other = (await _login(api, user.email))["refresh_token"]
    second = expect(await _refresh(api, first), 200)["refresh_token"]
    r = await _logout(api, second)
    assert r.status_code == 204 and r.content == b""
    assert all(row.revoked_at is not None for row in _family(api, second))
    expect(await _refresh(api, second), 401, "REFRESH_TOKEN_REVOKED")
    expect(await _refresh(api, first), 401, "REFRESH_TOKEN_REVOKED")
    # Logging out again, or with an unknown token, is fine and changes nothing.
    before = api.snapshot()
    assert (await _logout(api, second)).status_code == 204
    assert (await _logout(api, secrets.token_urlsafe(32))).status_code == 204
    assert api.snapshot() == before
    # The other login still works; a used (older) token of it logs it out too.
    third = expect(await _refresh(api, other), 200)["refresh_token"]
    assert (await _logout(api, other)).status_code == 204
    expect(await _refresh(api, third), 401, "REFRESH_TOKEN_REVOKED")


async def test_the_access_token_lives_on_after_logout(api: Api) -> None:
    user = await api.user()
    body = await _login(api, user.email)
    assert (await _logout(api, body["refresh_token"])).status_code == 204
    expect(await api.client.get(PREFIX + "/me/wallet", headers=_bearer(body["access_token"])), 200)


async def test_password_change_revokes_every_family(api: Api) -> None:
    user = await api.user()
    first = await _login(api, user.email)
    second = (await _login(api, user.email))["refresh_token"]
    rotated = expect(await _refresh(api, second), 200)["refresh_token"]
    other_user = await api.user()
    bystander = (await _login(api, other_user.email))["refresh_token"]

    r = await _change_password(api, user, PASSWORD, NEW_PASSWORD)
    assert r.status_code == 204 and r.content == b""
    for token in (first["refresh_token"], rotated):
        expect(await _refresh(api, token), 401, "REFRESH_TOKEN_REVOKED")
    expect(await _refresh(api, bystander), 200)  # another user's sessions stay
    # The old password no longer logs in, the new one does.
    r = await api.client.post(
        PREFIX + "/auth/token", data={"username": user.email, "password": PASSWORD}
    )
    expect(r, 401, "INVALID_CREDENTIALS")
    fresh = await _login(api, user.email, NEW_PASSWORD)
    expect(await _refresh(api, fresh["refresh_token"]), 200)
    # Access tokens already issued live until they expire (docs/api.md).
    expect(await api.client.get(PREFIX + "/me/wallet", headers=_bearer(first["access_token"])), 200)


async def test_password_change_refusals_change_nothing(api: Api, subtests: pytest.Subtests) -> None:
    user = await api.user()
    token = (await _login(api, user.email))["refresh_token"]
    before = api.snapshot()
    for current in ("Wr0ng-pass!", PASSWORD + "x", "a" * 100, "한" * 30):
        with subtests.test(current=current):
            r = await _change_password(api, user, current, NEW_PASSWORD)
            expect(r, 403, "WRONG_CURRENT_PASSWORD")
    for new in ("short1!", "password1", "12345678!", "a1!" + "a" * 70, ""):
        with subtests.test(new=new):
            r = await _change_password(api, user, PASSWORD, new)
            err = expect(r, 422, "VALIDATION_ERROR")
            assert any("new_password" in e["loc"] for e in err["details"]["errors"])
    bad_bodies: list[Any] = [
        {},
        {"current_password": PASSWORD},
        {"new_password": NEW_PASSWORD},
        {"current_password": "", "new_password": NEW_PASSWORD},
        {"current_password": PASSWORD, "new_password": 12345678},
    ]
    for payload in bad_bodies:
        with subtests.test(payload=payload):
            r = await api.client.put(PREFIX + "/me/password", headers=user.headers, json=payload)
            expect(r, 422, "VALIDATION_ERROR")
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    for headers in ({}, {"Authorization": "Bearer garbage"}):
        with subtests.test(headers=headers):
            r = await api.client.put(PREFIX + "/me/password", headers=headers, json=body)
            expect(r, 401, "UNAUTHENTICATED")
    secret = api.state.settings.jwt_secret.get_secret_value()
    ghost = create_access_token(Principal(user_id=424242, role="customer"), secret, 60)
    r = await api.client.put(PREFIX + "/me/password", headers=_bearer(ghost), json=body)
    expect(r, 401, "UNAUTHENTICATED")
    assert api.snapshot() == before
    expect(await _refresh(api, token), 200)


async def test_concurrent_password_changes_one_wins(api: Api) -> None:
    """Password changes with the same current password at once: one changes it, the
    other is refused (its current password is no longer the password, whether it
    checked before or after the first one's write: the write is conditional on the
    hash that was checked)."""
    user = await api.user()
    candidates = [f"N3w-Passw0rd-{i}!" for i in range(4)]
    responses: dict[str, httpx.Response] = {}
    async with anyio.create_task_group() as group:
        for new in candidates:

            async def one(new: str = new) -> None:
                responses[new] = await _change_password(api, user, PASSWORD, new)

            group.start_soon(one)
    winners = [new for new, r in responses.items() if r.status_code == 204]
    assert len(winners) == 1, {new: r.text for new, r in responses.items()}
    for new, r in responses.items():
        if new not in winners:
            expect(r, 403, "WRONG_CURRENT_PASSWORD")
    await _login(api, user.email, winners[0])
    for password in [PASSWORD, *(c for c in candidates if c not in winners)]:
        r = await api.client.post(
            PREFIX + "/auth/token", data={"username": user.email, "password": password}
        )
        expect(r, 401, "INVALID_CREDENTIALS")


async def test_a_password_changed_meanwhile_is_not_overwritten(api: Api) -> None:
    engine = make_sync_engine(api.db_url)
    try:
        with engine.begin() as conn, pytest.raises(WrongCurrentPassword):
            sessions.change_password_op(
                Tx(conn), user_id=api.admin.user_id, old_hash="stale", new_hash="new"
            )
    finally:
        engine.dispose()
    (row,) = _rows(api, "SELECT password_hash FROM users WHERE id = :u", u=api.admin.user_id)
    assert row.password_hash.startswith("$2")


async def test_an_overlong_password_at_login_is_401_not_500(api: Api) -> None:
    user = await api.user()
    r = await api.client.post(
        PREFIX + "/auth/token", data={"username": user.email, "password": "a1!" + "a" * 80}
    )
    expect(r, 401, "INVALID_CREDENTIALS")


async def test_a_deleted_user_s_refresh_token_is_invalid(api: Api, database_kind: str) -> None:
    # Deleted the ordinary way: the tokens go with the user (ON DELETE CASCADE).
    user = await api.user()
    token = (await _login(api, user.email))["refresh_token"]
    api.sql("DELETE FROM wallets WHERE user_id = :u", u=user.user_id)
    api.sql("DELETE FROM users WHERE id = :u", u=user.user_id)
    assert _rows(api, "SELECT id FROM refresh_tokens WHERE user_id = :u", u=user.user_id) == []
    expect(await _refresh(api, token), 401, "REFRESH_TOKEN_INVALID")

    # The user's row gone behind the foreign key's back: still refused, family revoked.
    user = await api.user()
    token = (await _login(api, user.email))["refresh_token"]
    if database_kind == "sqlite":
        path = api.db_url.removeprefix("sqlite:///")
        conn = sqlite3.connect(path)  # foreign keys are off in a bare connection
        try:
            conn.execute("DELETE FROM wallets WHERE user_id = ?", (user.user_id,))
            conn.execute("DELETE FROM users WHERE id = ?", (user.user_id,))
            conn.commit()
        finally:
            conn.close()
    else:
        api.sql("ALTER TABLE refresh_tokens DROP CONSTRAINT fk_refresh_tokens_user_id_users")
        api.sql("DELETE FROM wallets WHERE user_id = :u", u=user.user_id)
        api.sql("DELETE FROM users WHERE id = :u", u=user.user_id)
    expect(await _refresh(api, token), 401, "REFRESH_TOKEN_INVALID")
    family = _family(api, token)
    assert len(family) == 1 and family[0].revoked_at is not None


async def test_session_writes_go_through_the_writer(api: Api) -> None:
    user = await api.user()
    with writer_ops(api.state) as ops:
        token = (await _login(api, user.email))["refresh_token"]
        token = expect(await _refresh(api, token), 200)["refresh_token"]
        assert (await _logout(api, token)).status_code == 204
        assert (await _change_password(api, user, PASSWORD, NEW_PASSWORD)).status_code == 204
    funcs = [getattr(op, "func", op) for op in ops]
    assert funcs == [
        sessions.start_session_op,
        sessions.refresh_op,
        sessions.logout_op,
        sessions.change_password_op,
    ]


async def _race(api_of: list[Api], token: str, n: int) -> list[httpx.Response]:
    responses: list[httpx.Response] = []
    async with anyio.create_task_group() as group:
        for i in range(n):

            async def one(target: Api = api_of[i % len(api_of)]) -> None:
                responses.append(await _refresh(target, token))

            group.start_soon(one)
    return responses


def _assert_one_won(responses: list[httpx.Response]) -> str:
    """Exactly one 200; every other answer a reuse (``REFRESH_TOKEN_REUSED``), or, once a
    reuse has revoked the family, ``REFRESH_TOKEN_REVOKED``. Returns the winner's new
    token."""
    winners = [r for r in responses if r.status_code == 200]
    assert len(winners) == 1, [(r.status_code, r.text) for r in responses]
    codes = [expect(r, 401)["code"] for r in responses if r.status_code != 200]
    assert "REFRESH_TOKEN_REUSED" in codes, codes
    assert set(codes) <= {"REFRESH_TOKEN_REUSED", "REFRESH_TOKEN_REVOKED"}, codes
    token: str = winners[0].json()["refresh_token"]
    return token


async def test_two_concurrent_refreshes_with_one_token_one_wins(api: Api) -> None:
    """The conditional write lets one refresh win; the other is a reuse, and the family
    (the winner's new token included) is revoked. Several rounds, several users."""
    for _ in range(6):
        user = await api.user()
        token = (await _login(api, user.email))["refresh_token"]
        responses = await _race([api], token, 2)
        assert sorted(r.status_code for r in responses) == [200, 401]
        new = _assert_one_won(responses)
        expect(await _refresh(api, new), 401, "REFRESH_TOKEN_REVOKED")
        family = _family(api, token)
        assert len(family) == 2
        assert all(row.revoked_at is not None for row in family)


async def test_many_concurrent_refreshes_with_one_token_one_wins(api: Api) -> None:
    for _ in range(3):
        user = await api.user()
        token = (await _login(api, user.email))["refresh_token"]
        new = _assert_one_won(await _race([api], token, 8))
        expect(await _refresh(api, new), 401, "REFRESH_TOKEN_REVOKED")
        assert len(_family(api, token)) == 2


async def test_concurrent_refreshes_on_two_instances_one_wins(
    api: Api, start_app: StartApp
) -> None:
    """The same race over two app instances on one database (two writers: two
    connections that really compete for the token's row)."""
    async with start_app() as second:
        for _ in range(4):
            user = await api.user()
            token = (await _login(api, user.email))["refresh_token"]
            responses = await _race([api, second], token, 6)
            new = _assert_one_won(responses)
            expect(await _refresh(second, new), 401, "REFRESH_TOKEN_REVOKED")
            assert all(row.revoked_at is not None for row in _family(api, token))


async def test_a_refresh_waiting_for_the_winner_finds_a_reuse(api: Api) -> None:
    """The race step by step, on two connections: the winner has claimed the token but
    not committed; the loser's conditional write waits for it (PostgreSQL's row lock,
    SQLite's write lock), then matches nothing, finds the token used and revokes the
    family, the winner's new token included."""
    user = await api.user()
    token = (await _login(api, user.email))["refresh_token"]
    winner_engine, loser_engine = make_sync_engine(api.db_url), make_sync_engine(api.db_url)
    outcome: list[object] = []

    def lose() -> None:
        with loser_engine.begin() as conn:
            outcome.append(sessions.refresh_op(Tx(conn), token=token, ttl_s=600))

    try:
        with winner_engine.connect() as conn:
            transaction = conn.begin()
            won = sessions.refresh_op(Tx(conn), token=token, ttl_s=600)
            assert isinstance(won, sessions.Issued)
            loser = threading.Thread(target=lose)
            loser.start()
            loser.join(0.5)
            assert loser.is_alive() and not outcome  # waiting for the winner
            transaction.commit()
        loser.join(30)
        assert not loser.is_alive()
    finally:
        winner_engine.dispose()
        loser_engine.dispose()
    assert len(outcome) == 1 and isinstance(outcome[0], RefreshTokenReused)
    family = _family(api, token)
    assert len(family) == 2 and all(row.revoked_at is not None for row in family)
    expect(await _refresh(api, won.refresh_token), 401, "REFRESH_TOKEN_REVOKED")


async def test_expired_tokens_are_purged(api: Api) -> None:
    user = await api.user()
    old = (await _login(api, user.email))["refresh_token"]
    live = (await _login(api, user.email))["refresh_token"]
    past = (utc() - timedelta(days=1)).replace(tzinfo=None)
    api.sql(
        "UPDATE refresh_tokens SET expires_at = :t WHERE token_hash = :h",
        t=past,
        h=hashlib.sha256(old.encode()).hexdigest(),
    )
    await Maintenance(api.state).step()
    hashes = {
        row.token_hash
        for row in _rows(
            api, "SELECT token_hash FROM refresh_tokens WHERE user_id = :u", u=user.user_id
        )
    }
    assert hashlib.sha256(live.encode()).hexdigest() in hashes
    assert hashlib.sha256(old.encode()).hexdigest() not in hashes
    expect(await _refresh(api, old), 401, "REFRESH_TOKEN_INVALID")
    expect(await _refresh(api, live), 200)
