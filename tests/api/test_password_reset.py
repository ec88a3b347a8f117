"""Password reset by e-mail: the code by mail, its use, its refusals, the race of two
confirms, and the mail through a real ``flashsale mail-sink`` (docs/api.md, "Password
reset"; docs/rules.md, "Accounts and tokens")."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from datetime import timedelta
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select, text

from flashsale.auth import password_reset
from flashsale.db.engine import make_sync_engine
from flashsale.db.models import password_reset_codes
from flashsale.db.writer import Tx
from flashsale.demo.server import MailSinkProcess
from flashsale.errors import ResetCodeUsed

from .support import PASSWORD, PREFIX, Api, StartApp, User, expect, utc, writer_ops

pytestmark = pytest.mark.anyio

NEW_PASSWORD = "N3w-Passw0rd!"
#: The line of the mail text that carries the code.
CODE_LINE = re.compile(r"^    ([0-9]{6})$", re.M)


async def _request(api: Api, email: str) -> httpx.Response:
    return await api.post("/auth/password-reset", json={"email": email})


async def _confirm(
    api: Api, email: str, code: str, new_password: str = NEW_PASSWORD
) -> httpx.Response:
    body = {"email": email, "code": code, "new_password": new_password}
    return await api.post("/auth/password-reset/confirm", json=body)


async def _login(api: Api, email: str, password: str = PASSWORD) -> httpx.Response:
    return await api.client.post(
        PREFIX + "/auth/token", data={"username": email, "password": password}
    )


def _rows(api: Api, statement: str, **params: Any) -> list[Any]:
    engine = make_sync_engine(api.db_url, immediate=False)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(statement), params))
    finally:
        engine.dispose()


def _mails(api: Api, to: str | None = None) -> list[dict[str, Any]]:
    """The payloads of the mail jobs in the outbox (to ``to`` if given), oldest first."""
    rows = _rows(api, "SELECT payload FROM outbox WHERE type = 'mail' ORDER BY created_at, id")
    mails = [json.loads(row.payload) for row in rows]
    return [m for m in mails if to is None or m["to"] == to]


def _code_in(mail_text: str) -> str:
    match = CODE_LINE.search(mail_text)
    assert match is not None, mail_text
    return match.group(1)


async def _requested_code(api: Api, email: str) -> str:
    """Ask for a code for ``email`` and read it from the mail job just queued."""
    expect(await _request(api, email), 202)
    return _code_in(_mails(api, email)[-1]["text"])


def _code_row(api: Api, user: User) -> Any:
    """The user's ``password_reset_codes`` row (typed: aware datetimes), or None."""
    engine = make_sync_engine(api.db_url, immediate=False)
    try:
        with engine.connect() as conn:
            stmt = select(password_reset_codes).where(
                password_reset_codes.c.user_id == user.user_id
            )
            return conn.execute(stmt).first()
    finally:
        engine.dispose()


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


async def test_a_code_by_mail_sets_the_new_password_and_ends_every_session(api: Api) -> None:
    user = await api.user()
    refresh = expect(await _login(api, user.email), 200)["refresh_token"]
    bystander = await api.user()
    other_refresh = expect(await _login(api, bystander.email), 200)["refresh_token"]

    body = expect(await _request(api, user.email.upper()), 202)  # any case of the address
    assert body == {
        "message": "If an account has this address, a code to reset its password was sent to it.",
        "expires_in": 900,
    }
    (mail,) = _mails(api)
    assert mail["to"] == user.email
    assert mail["template"] == "password-reset"
    assert mail["subject"] == "Your Flashsale password reset code"
    code = _code_in(mail["text"])
    assert "valid for 15 minutes and works once" in mail["text"]
    # Stored only as its keyed hash: neither the code nor a plain hash of it.
    row = _code_row(api, user)
    assert re.fullmatch(r"[0-9a-f]{64}", row.code_hash)
    for plain in (code, f"{user.user_id}:{code}"):
        assert row.code_hash != hashlib.sha256(plain.encode()).hexdigest()
    assert code not in repr(tuple(row))
    assert row.expires_at - row.created_at == timedelta(seconds=900)
    assert (row.failed_attempts, row.used_at) == (0, None)

    r = await _confirm(api, user.email, code)
    assert r.status_code == 204 and r.content == b""
    assert _code_row(api, user).used_at is not None
    expect(await _login(api, user.email), 401, "INVALID_CREDENTIALS")
    fresh = expect(await _login(api, user.email, NEW_PASSWORD), 200)
    # Every refresh family of the user is revoked; another user's stays.
    expect(await api.post("/auth/refresh", json={"refresh_token": refresh}), 401,
           "REFRESH_TOKEN_REVOKED")  # fmt: skip
    expect(await api.post("/auth/refresh", json={"refresh_token": fresh["refresh_token"]}), 200)
    expect(await api.post("/auth/refresh", json={"refresh_token": other_refresh}), 200)

    # The code works once.
    before = api.snapshot()
    expect(await _confirm(api, user.email, code, "An0ther-pass!"), 400, "RESET_CODE_USED")
    assert api.snapshot() == before
    expect(await _login(api, user.email, NEW_PASSWORD), 200)


async def test_an_unknown_address_gets_the_same_answer_and_nothing_is_written(api: Api) -> None:
    user = await api.user()
    known = await _request(api, user.email)
    before = api.snapshot()
    with writer_ops(api.state) as ops:
        unknown = await _request(api, "nobody@example.com")
    assert unknown.status_code == known.status_code == 202
    assert unknown.json() == known.json()
    assert unknown.headers.keys() == known.headers.keys()
    assert api.snapshot() == before  # no code row, no mail job
    assert [getattr(op, "func", op) for op in ops] == [password_reset.request_reset_op]
    assert _mails(api, "nobody@example.com") == []

    # Confirming for an unknown address answers exactly as a wrong code does.
    code = _code_in(_mails(api, user.email)[-1]["text"])
    wrong = await _confirm(api, user.email, _wrong(code))
    before = api.snapshot()
    nobody = await _confirm(api, "nobody@example.com", code)
    assert api.snapshot() == before
    assert (nobody.status_code, nobody.json()) == (wrong.status_code, wrong.json())
    assert expect(nobody, 400, "RESET_CODE_INVALID")["details"] == {}


async def test_a_user_who_never_asked_has_no_code(api: Api) -> None:
    user = await api.user()
    before = api.snapshot()
    expect(await _confirm(api, user.email, "123456"), 400, "RESET_CODE_INVALID")
    assert api.snapshot() == before


async def test_five_wrong_codes_void_the_code(api: Api) -> None:
    user = await api.user()
    code = await _requested_code(api, user.email)
    wrong = _wrong(code)
    for tries in range(1, 6):
        expect(await _confirm(api, user.email, wrong), 400, "RESET_CODE_INVALID")
        assert _code_row(api, user).failed_attempts == tries
    # Now even the right code is refused, and says why; nothing changes any more.
    before = api.snapshot()
    expect(await _confirm(api, user.email, code), 400, "RESET_CODE_VOID")
    expect(await _confirm(api, user.email, wrong), 400, "RESET_CODE_INVALID")
    assert api.snapshot() == before
    expect(await _login(api, user.email), 200)  # the password is unchanged
    # A new code starts afresh.
    code = await _requested_code(api, user.email)
    assert _code_row(api, user).failed_attempts == 0
    expect(await _confirm(api, user.email, _wrong(code)), 400, "RESET_CODE_INVALID")
    assert (await _confirm(api, user.email, code)).status_code == 204
    expect(await _login(api, user.email, NEW_PASSWORD), 200)


async def test_concurrent_wrong_codes_all_count(api: Api) -> None:
    user = await api.user()
    code = await _requested_code(api, user.email)
    wrongs = [f"{(int(code) + i) % 10**6:06d}" for i in range(1, 9)]
    responses: list[httpx.Response] = []
    async with anyio.create_task_group() as group:
        for wrong in wrongs:

            async def one(wrong: str = wrong) -> None:
                responses.append(await _confirm(api, user.email, wrong))

            group.start_soon(one)
    assert {expect(r, 400)["code"] for r in responses} == {"RESET_CODE_INVALID"}
    assert _code_row(api, user).failed_attempts == 5  # counted up to the limit, no further
    expect(await _confirm(api, user.email, code), 400, "RESET_CODE_VOID")


async def test_a_new_request_replaces_the_code(api: Api) -> None:
    user = await api.user()
    first = await _requested_code(api, user.email)
    expect(await _confirm(api, user.email, _wrong(first)), 400, "RESET_CODE_INVALID")
    second = await _requested_code(api, user.email)
    while second == first:  # one chance in a million
        second = await _requested_code(api, user.email)
    assert len(_mails(api, user.email)) >= 2
    assert _code_row(api, user).failed_attempts == 0
    expect(await _confirm(api, user.email, first), 400, "RESET_CODE_INVALID")
    assert (await _confirm(api, user.email, second)).status_code == 204
    # A request after the use replaces the used code with a working one.
    third = await _requested_code(api, user.email)
    assert (await _confirm(api, user.email, third, "Th1rd-pass!")).status_code == 204
    expect(await _login(api, user.email, "Th1rd-pass!"), 200)


async def test_an_expired_code_is_refused(api: Api) -> None:
    user = await api.user()
    code = await _requested_code(api, user.email)
    api.sql(
        "UPDATE password_reset_codes SET expires_at = :t WHERE user_id = :u",
        t=utc(seconds=-1).replace(tzinfo=None),
        u=user.user_id,
    )
    before = api.snapshot()
    expect(await _confirm(api, user.email, code), 400, "RESET_CODE_EXPIRED")
    expect(await _confirm(api, user.email, _wrong(code)), 400, "RESET_CODE_INVALID")
    assert api.snapshot() == before  # an expired code counts no wrong try either
    expect(await _login(api, user.email), 200)


async def test_the_code_expires_after_its_validity(api: Api) -> None:
    """The operation at an injected ``now``: the code works until ``expires_at``, not at it."""
    user = await api.user()
    key = password_reset.reset_code_key(api.state.settings.jwt_secret.get_secret_value())
    start = utc()
    assert await api.state.writer.submit(
        lambda tx: password_reset.request_reset_op(
            tx, email=user.email, key=key, ttl_s=900, now=start
        )
    )
    code = _code_in(_mails(api, user.email)[-1]["text"])

    async def confirm_at(seconds: float) -> object:
        return await api.state.writer.submit(
            lambda tx: password_reset.confirm_reset_op(
                tx,
                email=user.email,
                code=code,
                new_hash="$2b$04$unused",
                key=key,
                now=start + timedelta(seconds=seconds),
            )
        )

    assert type(await confirm_at(900)).__name__ == "ResetCodeExpired"
    assert type(await confirm_at(3600)).__name__ == "ResetCodeExpired"
    assert await confirm_at(899.999) is None


async def test_the_validity_is_a_setting(start_app: StartApp) -> None:
    async with start_app(password_reset_ttl_s=120) as api:
        user = await api.user()
        body = expect(await _request(api, user.email), 202)
        assert body["expires_in"] == 120
        (mail,) = _mails(api, user.email)
        assert "valid for 2 minutes" in mail["text"]
        row = _code_row(api, user)
        assert row.expires_at - row.created_at == timedelta(seconds=120)


async def test_bad_bodies_are_422_and_change_nothing(api: Api, subtests: pytest.Subtests) -> None:
    user = await api.user()
    code = await _requested_code(api, user.email)
    before = api.snapshot()
    bad_requests: list[Any] = [
        {},
        {"email": ""},
        {"email": "not-an-address"},
        {"email": "a@b@example.com"},
        {"email": "x" * 310 + "@example.com"},
        {"email": 12345},
        {"email": None},
        ["email"],
    ]
    for payload in bad_requests:
        with subtests.test(path="request", payload=payload):
            r = await api.post("/auth/password-reset", json=payload)
            expect(r, 422, "VALIDATION_ERROR")
    good = {"email": user.email, "code": code, "new_password": NEW_PASSWORD}
    bad_confirms: list[Any] = [
        {},
        {k: v for k, v in good.items() if k != "code"},
        {k: v for k, v in good.items() if k != "new_password"},
        {k: v for k, v in good.items() if k != "email"},
        good | {"email": "not-an-address"},
        good | {"code": code[:5]},
        good | {"code": code + "0"},
        good | {"code": "abcdef"},
        good | {"code": " " + code[1:]},
        good | {"code": "١٢٣٤٥٦"},  # digits, but not ASCII ones
        good | {"code": int(code)},
        good | {"new_password": "short1!"},
        good | {"new_password": "password1"},
        good | {"new_password": "a1!" + "a" * 70},
        good | {"new_password": None},
    ]
    for payload in bad_confirms:
        with subtests.test(path="confirm", payload=payload):
            r = await api.post("/auth/password-reset/confirm", json=payload)
            expect(r, 422, "VALIDATION_ERROR")
    for path in ("/auth/password-reset", "/auth/password-reset/confirm"):
        with subtests.test(path=path, payload="not json"):
            r = await api.client.post(
                PREFIX + path, content=b"{", headers={"Content-Type": "application/json"}
            )
            expect(r, 422, "VALIDATION_ERROR")
    assert api.snapshot() == before  # no try counted, no code, no mail
    assert (await _confirm(api, user.email, code)).status_code == 204


async def test_password_reset_writes_go_through_the_writer(api: Api) -> None:
    user = await api.user()
    with writer_ops(api.state) as ops:
        code = await _requested_code(api, user.email)
        expect(await _request(api, "nobody@example.com"), 202)
        expect(await _confirm(api, user.email, _wrong(code)), 400, "RESET_CODE_INVALID")
        assert (await _confirm(api, user.email, code)).status_code == 204
    funcs = [getattr(op, "func", op) for op in ops]
    assert funcs == [
        password_reset.request_reset_op,
        password_reset.request_reset_op,
        password_reset.confirm_reset_op,
        password_reset.confirm_reset_op,
    ]


async def _race(api_of: list[Api], email: str, code: str, n: int) -> dict[str, httpx.Response]:
    """``n`` confirms of one code at once, each with its own new password."""
    responses: dict[str, httpx.Response] = {}
    async with anyio.create_task_group() as group:
        for i in range(n):

            async def one(i: int = i) -> None:
                new = f"Race-{i}-passw0rd!"
                responses[new] = await _confirm(api_of[i % len(api_of)], email, code, new)

            group.start_soon(one)
    return responses


async def _assert_one_won(api: Api, email: str, responses: dict[str, httpx.Response]) -> None:
    """Exactly one 204, every other confirm ``RESET_CODE_USED``; the winner's password is
    the password, no loser's is."""
    winners = [new for new, r in responses.items() if r.status_code == 204]
    assert len(winners) == 1, {new: r.text for new, r in responses.items()}
    for new, r in responses.items():
        if new not in winners:
            expect(r, 400, "RESET_CODE_USED")
            expect(await _login(api, email, new), 401, "INVALID_CREDENTIALS")
    expect(await _login(api, email, winners[0]), 200)


async def test_concurrent_confirms_with_one_code_one_wins(api: Api) -> None:
    for n in (2, 6):
        user = await api.user()
        code = await _requested_code(api, user.email)
        await _assert_one_won(api, user.email, await _race([api], user.email, code, n))


async def test_concurrent_confirms_on_two_instances_one_wins(api: Api, start_app: StartApp) -> None:
    """The same race over two app instances on one database (two writers: two
    connections that really compete for the code's row)."""
    async with start_app() as second:
        for _ in range(3):
            user = await api.user()
            code = await _requested_code(api, user.email)
            responses = await _race([api, second], user.email, code, 6)
            await _assert_one_won(api, user.email, responses)


async def test_a_confirm_waiting_for_the_winner_finds_the_code_used(api: Api) -> None:
    """The race step by step, on two connections: the winner has claimed the code but not
    committed; the loser's conditional write waits for it (PostgreSQL's row lock,
    SQLite's write lock), then matches nothing and finds the code used."""
    user = await api.user()
    code = await _requested_code(api, user.email)
    key = password_reset.reset_code_key(api.state.settings.jwt_secret.get_secret_value())
    winner_engine, loser_engine = make_sync_engine(api.db_url), make_sync_engine(api.db_url)
    outcome: list[object] = []

    def confirm(conn: Any, new_hash: str) -> object:
        return password_reset.confirm_reset_op(
            Tx(conn), email=user.email, code=code, new_hash=new_hash, key=key, now=utc()
        )

    def lose() -> None:
        with loser_engine.begin() as conn:
            outcome.append(confirm(conn, "loser-hash"))

    try:
        with winner_engine.connect() as conn:
            transaction = conn.begin()
            assert confirm(conn, "winner-hash") is None
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
    assert len(outcome) == 1 and isinstance(outcome[0], ResetCodeUsed)
    (row,) = _rows(api, "SELECT password_hash FROM users WHERE id = :u", u=user.user_id)
    assert row.password_hash == "winner-hash"


async def test_a_deleted_user_s_code_goes_with_the_user(api: Api) -> None:
    user = await api.user()
    code = await _requested_code(api, user.email)
    api.sql("DELETE FROM wallets WHERE user_id = :u", u=user.user_id)
    api.sql("DELETE FROM users WHERE id = :u", u=user.user_id)
    assert _code_row(api, user) is None  # ON DELETE CASCADE
    expect(await _confirm(api, user.email, code), 400, "RESET_CODE_INVALID")


async def _sink_messages(sink: MailSinkProcess, to: str) -> list[dict[str, Any]]:
    return await anyio.to_thread.run_sync(lambda: sink.messages(to=to))


@pytest.mark.e2e
async def test_the_reset_mail_arrives_through_a_real_mail_sink(
    start_app: StartApp, tmp_path: Any
) -> None:
    """End to end: request → outbox → the app's relay → SMTP → ``flashsale mail-sink``;
    the code read from the sink sets the new password; old sessions are revoked; an
    unknown address gets no mail."""
    with MailSinkProcess(log_path=tmp_path / "sink.log") as sink:
        async with start_app(smtp_url=SecretStr(sink.smtp_url), outbox_poll_s=0.05) as api:
            user = await api.user()
            refresh = expect(await _login(api, user.email), 200)["refresh_token"]
            expect(await _request(api, user.email), 202)
            expect(await _request(api, "nobody@example.com"), 202)

            deadline = time.monotonic() + 30
            while not (received := await _sink_messages(sink, user.email)):
                assert time.monotonic() < deadline, "no reset mail reached the sink"
                await anyio.sleep(0.05)
            (mail,) = received
            assert mail["template"] == "password-reset"
            assert mail["subject"] == "Your Flashsale password reset code"
            assert "valid for 15 minutes" in mail["text"]
            code = _code_in(mail["text"])

            assert (await _confirm(api, user.email, code)).status_code == 204
            expect(await _login(api, user.email, NEW_PASSWORD), 200)
            expect(await _login(api, user.email), 401, "INVALID_CREDENTIALS")
            r = await api.post("/auth/refresh", json={"refresh_token": refresh})
            expect(r, 401, "REFRESH_TOKEN_REVOKED")
            await anyio.sleep(0.3)  # the relay had its rounds
            assert await _sink_messages(sink, "nobody@example.com") == []
            stats = await anyio.to_thread.run_sync(sink.stats)
            assert stats["stored"] == 1
