"""``/me/wallet``: charges, the balance limit and the ledger (docs/rules.md)."""

from __future__ import annotations

import pytest

from .support import Api, expect

pytestmark = pytest.mark.anyio


async def test_charge(api: Api) -> None:
    user = await api.user()
    body = expect(await api.post("/me/wallet/charges", user, json={"amount": 5_000}), 201)
    assert set(body) == {"transaction_id", "amount", "balance", "created_at"}
    assert (body["amount"], body["balance"]) == (5_000, 5_000)
    body = expect(await api.post("/me/wallet/charges", user, json={"amount": 1_000}), 201)
    assert body["balance"] == 6_000
    wallet = expect(await api.get("/me/wallet", user), 200)
    assert set(wallet) == {"user_id", "balance", "updated_at"}
    assert (wallet["user_id"], wallet["balance"]) == (user.user_id, 6_000)
    api.assert_audit_ok()


@pytest.mark.parametrize("amount", [1_000, 1_000_000])
async def test_charge_bounds_are_inclusive(api: Api, amount: int) -> None:
    user = await api.user()
    body = expect(await api.post("/me/wallet/charges", user, json={"amount": amount}), 201)
    assert body["balance"] == amount


async def test_charge_out_of_range_is_422_and_changes_nothing(api: Api) -> None:
    user = await api.user(balance=2_000)
    before = api.snapshot()
    for amount in (-1_000, 0, 1, 999, 1_000_001, 2**53):
        r = await api.post("/me/wallet/charges", user, json={"amount": amount})
        body = expect(r, 422, "CHARGE_AMOUNT_OUT_OF_RANGE")
        assert body["details"]["amount"] == amount
    assert api.snapshot() == before
    assert await api.balance(user) == 2_000


BAD_CHARGES: list[object] = [
    {},
    {"amount": "lots"},
    {"amount": 1000.5},
    {"amount": None},
    {"amount": 10**30},
    {"amount": -(10**30)},
    [],
]


async def test_charge_bad_body_is_422(api: Api, subtests: pytest.Subtests) -> None:
    user = await api.user()
    before = api.snapshot()
    for payload in BAD_CHARGES:
        with subtests.test(payload=payload):
            r = await api.post("/me/wallet/charges", user, json=payload)
            body = expect(r, 422)
            assert body["code"] in ("VALIDATION_ERROR", "CHARGE_AMOUNT_OUT_OF_RANGE")
    assert api.snapshot() == before


async def test_balance_limit(api: Api) -> None:
    user = await api.user()
    api.fund(user, 99_000_000)
    body = expect(await api.post("/me/wallet/charges", user, json={"amount": 1_000_000}), 201)
    assert body["balance"] == 100_000_000  # the limit itself is allowed
    before = api.snapshot()
    r = await api.post("/me/wallet/charges", user, json={"amount": 1_000})
    expect(r, 409, "BALANCE_LIMIT_EXCEEDED")
    assert api.snapshot() == before
    assert await api.balance(user) == 100_000_000
    api.assert_audit_ok()


async def test_balance_limit_counts_the_whole_charge(api: Api) -> None:
    user = await api.user()
    api.fund(user, 99_500_000)
    expect(
        await api.post("/me/wallet/charges", user, json={"amount": 500_001}),
        409,
        "BALANCE_LIMIT_EXCEEDED",
    )
    expect(await api.post("/me/wallet/charges", user, json={"amount": 500_000}), 201)
    api.assert_audit_ok()


async def test_ledger_pages_and_balance_chain(api: Api) -> None:
    user = await api.user()
    amounts = [1_000 * (i + 1) for i in range(7)]
    for amount in amounts:
        expect(await api.post("/me/wallet/charges", user, json={"amount": amount}), 201)

    seen: list[dict[str, object]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, object] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        page = expect(await api.get("/me/wallet/transactions", user, params=params), 200)
        assert set(page) == {"items", "next_cursor"}
        assert len(page["items"]) <= 3
        seen += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == 7
    ids = [int(t["id"]) for t in seen]  # type: ignore[call-overload]
    assert ids == sorted(ids, reverse=True)  # newest first, no repeats
    assert len(set(ids)) == 7
    chronological = list(reversed(seen))
    assert [t["amount"] for t in chronological] == amounts
    running = 0
    for t in chronological:
        assert set(t) == {"id", "type", "amount", "balance_after", "order_id", "created_at"}
        assert t["type"] == "CHARGE" and t["order_id"] is None
        running += int(t["amount"])  # type: ignore[call-overload]
        assert t["balance_after"] == running
    assert await api.balance(user) == running


async def test_ledger_exact_page_has_no_next_cursor(api: Api) -> None:
    user = await api.user(balance=2_000)  # one charge
    expect(await api.post("/me/wallet/charges", user, json={"amount": 1_000}), 201)
    page = expect(await api.get("/me/wallet/transactions", user, params={"limit": 2}), 200)
    assert len(page["items"]) == 2
    assert page["next_cursor"] is None


async def test_ledger_is_per_user(api: Api) -> None:
    a = await api.user(balance=5_000)
    b = await api.user()
    assert len(await api.ledger(a)) == 1
    assert await api.ledger(b) == []
    # a's cursor used by b shows only b's rows (none)
    page = expect(await api.get("/me/wallet/transactions", a, params={"limit": 1}), 200)
    assert page["next_cursor"] is None


BAD_QUERIES: list[tuple[dict[str, object], str]] = [
    ({"limit": 0}, "VALIDATION_ERROR"),
    ({"limit": 101}, "VALIDATION_ERROR"),
    ({"limit": -1}, "VALIDATION_ERROR"),
    ({"limit": 10**30}, "VALIDATION_ERROR"),
    ({"limit": "ten"}, "VALIDATION_ERROR"),
    ({"cursor": "x" * 65}, "VALIDATION_ERROR"),
    ({"cursor": "garbage!"}, "INVALID_CURSOR"),
    ({"cursor": "MA"}, "INVALID_CURSOR"),  # "0"
    ({"cursor": "LTE"}, "INVALID_CURSOR"),  # "-1"
    ({"cursor": "OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5"}, "INVALID_CURSOR"),  # past 64 bits
]


async def test_ledger_bad_query_is_422(api: Api, subtests: pytest.Subtests) -> None:
    user = await api.user()
    for params, code in BAD_QUERIES:
        with subtests.test(params=params):
            r = await api.get("/me/wallet/transactions", user, params=params)
            expect(r, 422, code)
