"""Order concurrency on a real server with 2 workers (docs/rules.md, docs/api.md,
docs/invariants.md).

- 100 concurrent cancels of different paid orders restore stock, money and coupons
  exactly, and take the sales out of the served ranking;
- one ``Idempotency-Key`` sent 50 times at once has one effect (one order, one charge);
- payments racing the expiry of their orders end in exactly one of PAID or EXPIRED.

Every test ends with the audit, including invariant 5 against the running server.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest

if TYPE_CHECKING:
    from .conftest import LiveServer, ServerFactory, User


pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.anyio]

#: Requests in flight while placing the orders a test starts from.
SETUP_CONCURRENCY = 16


async def wallet_ledger(
    server: LiveServer, client: httpx.AsyncClient, user: User
) -> list[dict[str, Any]]:
    """Every row of ``GET /me/wallet/transactions``, oldest first."""
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100}
        if cursor is not None:
            params["cursor"] = cursor
        page = server.expect(
            await client.get("/me/wallet/transactions", headers=user.headers, params=params), 200
        )
        rows += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return sorted(rows, key=lambda row: row["id"])


async def variant_stock(
    server: LiveServer, client: httpx.AsyncClient, product_ids: list[int]
) -> dict[int, int]:
    """``{variant_id: stock}`` over the products, from ``GET /products/{id}``."""
    stock: dict[int, int] = {}
    for product_id in product_ids:
        detail = server.expect(await client.get(f"/products/{product_id}"), 200)
        stock.update({v["id"]: v["stock"] for v in detail["variants"]})
    return stock


async def served_rankings(
    server: LiveServer, client: httpx.AsyncClient, copies: int = 8
) -> list[list[tuple[int, int, int]]]:
    """``/products/popular`` (quantity and orders, 1 day) asked ``copies`` times each at
    once, over as many connections: both workers answer some of them."""

    async def one(metric: str) -> list[tuple[int, int, int]]:
        body = server.expect(
            await client.get(
                "/products/popular", params={"metric": metric, "days": 1, "limit": 50}
            ),
            200,
        )
        return [(i["product_id"], i["quantity"], i["orders"]) for i in body["items"]]

    return list(
        await asyncio.gather(*(one(m) for m in ("quantity", "orders") for _ in range(copies)))
    )


async def eventually(what: str, check: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    """Wait until ``check()`` is true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        await anyio.sleep(0.1)


async def bounded(calls: list[Awaitable[httpx.Response]], limit: int) -> list[httpx.Response]:
    """Await the calls with at most ``limit`` in flight; results in order."""
    limiter = asyncio.Semaphore(limit)

    async def one(call: Awaitable[httpx.Response]) -> httpx.Response:
        async with limiter:
            return await call

    return list(await asyncio.gather(*(one(c) for c in calls)))


# -- 1. 100 concurrent cancels ---------------------------------------------------------

CANCEL_USERS = 100
CANCEL_CHARGE = 200_000
CANCEL_STOCK = 1_000
#: Every third user pays with a coupon (FIXED 5,000 KRW off).
COUPON_EVERY = 3


def cancel_lines(index: int, variant_ids: list[int]) -> list[dict[str, int]]:
    """User ``index``'s order: one to four of the shared variants, 1-3 units each."""
    chosen = [
        (j, variant_id)
        for j, variant_id in enumerate(variant_ids)
        if (index >> j) & 1 or j == index % len(variant_ids)
    ]
    return [{"variant_id": v, "quantity": 1 + (index + j) % 3} for j, v in chosen]


async def test_100_concurrent_cancels_restore_stock_money_and_coupons(
    live_server: LiveServer,
) -> None:
    server = live_server
    with anyio.fail_after(180):
        async with server.client(connections=CANCEL_USERS) as client:
            admin = await server.admin_headers(client)
            tee = await server.create_product(
                client,
                admin,
                name="Tee",
                variants=[
                    {"sku": "TEE-S", "name": "S", "price": 12_000, "stock": CANCEL_STOCK},
                    {"sku": "TEE-M", "name": "M", "price": 13_000, "stock": CANCEL_STOCK},
                ],
            )
            cap = await server.create_product(
                client,
                admin,
                name="Cap",
                variants=[{"sku": "CAP", "name": "One", "price": 8_000, "stock": CANCEL_STOCK}],
            )
            mug = await server.create_product(
                client,
                admin,
                name="Mug",
                variants=[{"sku": "MUG", "name": "One", "price": 5_000, "stock": CANCEL_STOCK}],
            )
            products = [tee, cap, mug]
            product_ids = [p["id"] for p in products]
            variant_ids = [v["id"] for p in products for v in p["variants"]]
            product_of = {v["id"]: p["id"] for p in products for v in p["variants"]}
            coupon = await server.create_coupon(
                client, admin, total_quantity=CANCEL_USERS, min_order_amount=5_000
            )
            users = await server.seed_users(
                client, CANCEL_USERS, prefix="canceller", charge=CANCEL_CHARGE
            )
            coupon_users = list(range(0, CANCEL_USERS, COUPON_EVERY))
            issued = await bounded(
                [
                    client.post(f"/coupons/{coupon['id']}/issue", headers=users[i].headers)
                    for i in coupon_users
                ],
                SETUP_CONCURRENCY,
            )
            user_coupon = {
                i: server.expect(r, 201)["user_coupon_id"]
                for i, r in zip(coupon_users, issued, strict=True)
            }

            bodies = []
            for i in range(CANCEL_USERS):
                body: dict[str, Any] = {"items": cancel_lines(i, variant_ids), "pay": True}
                if i in user_coupon:
                    body["user_coupon_id"] = user_coupon[i]
                bodies.append(body)
            placed = await bounded(
                [
                    client.post("/orders", headers=u.headers, json=b)
                    for u, b in zip(users, bodies, strict=True)
                ],
                SETUP_CONCURRENCY,
            )
            orders = [server.expect(r, 201) for r in placed]
            assert all(o["status"] == "PAID" for o in orders)
            assert [o["discount_amount"] > 0 for o in orders] == [
                i in user_coupon for i in range(CANCEL_USERS)
            ]
            assert sum(len(o["items"]) > 1 for o in orders) > CANCEL_USERS // 2

            sold_units: Counter[int] = Counter()
            sold_orders: Counter[int] = Counter()
            for order in orders:
                for item in order["items"]:
                    sold_units[item["product_id"]] += item["quantity"]
                for product_id in {item["product_id"] for item in order["items"]}:
                    sold_orders[product_id] += 1
            stock = await variant_stock(server, client, product_ids)
            units_by_variant = Counter(
                {
                    v: sum(
                        i["quantity"] for o in orders for i in o["items"] if i["variant_id"] == v
                    )
                    for v in variant_ids
                }
            )
            assert stock == {v: CANCEL_STOCK - units_by_variant[v] for v in variant_ids}
            assert set(product_of.values()) == set(sold_units)

            # Both workers serve the sales before the cancels (so the cancels must take
            # them out again, not merely never have had them).
            by_quantity = sorted(
                ((p, sold_units[p], sold_orders[p]) for p in sold_units),
                key=lambda e: (-e[1], e[0]),
            )
            by_orders = sorted(by_quantity, key=lambda e: (-e[2], e[0]))

            async def sales_served() -> bool:
                served = await served_rankings(server, client)
                half = len(served) // 2
                return served[:half] == [by_quantity] * half and served[half:] == [by_orders] * half

            await eventually("both workers to serve the sales", sales_served, 10)

            # The storm: every order cancelled at once, over 100 connections.
            responses = await asyncio.gather(
                *(
                    client.post(f"/orders/{o['order_id']}/cancel", headers=u.headers)
                    for u, o in zip(users, orders, strict=True)
                )
            )

            statuses = Counter(r.status_code for r in responses)
            assert statuses == {200: CANCEL_USERS}, [
                (r.status_code, r.text) for r in responses if r.status_code != 200
            ][:5]
            for order, response in zip(orders, responses, strict=True):
                cancelled = response.json()
                assert cancelled["order_id"] == order["order_id"]
                assert cancelled["status"] == "CANCELLED"
                assert [(p["kind"], p["amount"]) for p in cancelled["payments"]] == [
                    ("PAYMENT", order["paid_amount"]),
                    ("REFUND", order["paid_amount"]),
                ]

            # Stock: every variant back to its initial stock exactly.
            assert await variant_stock(server, client, product_ids) == dict.fromkeys(
                variant_ids, CANCEL_STOCK
            )

            # Money: every wallet back to its balance before the order, one refund each.
            wallets = await bounded(
                [client.get("/me/wallet", headers=u.headers) for u in users], SETUP_CONCURRENCY
            )
            assert [server.expect(w, 200)["balance"] for w in wallets] == [
                CANCEL_CHARGE
            ] * CANCEL_USERS
            ledgers = await asyncio.gather(*(wallet_ledger(server, client, u) for u in users))
            for order, ledger in zip(orders, ledgers, strict=True):
                paid = order["paid_amount"]
                assert [(r["type"], r["amount"], r["order_id"]) for r in ledger] == [
                    ("CHARGE", CANCEL_CHARGE, None),
                    ("PAYMENT", -paid, order["order_id"]),
                    ("REFUND", paid, order["order_id"]),
                ]
                assert [r["balance_after"] for r in ledger] == [
                    CANCEL_CHARGE,
                    CANCEL_CHARGE - paid,
                    CANCEL_CHARGE,
                ]

            # Coupons: back to ISSUED, free of the order; none issued or lost meanwhile.
            mine = await bounded(
                [client.get("/me/coupons", headers=users[i].headers) for i in coupon_users],
                SETUP_CONCURRENCY,
            )
            for i, response in zip(coupon_users, mine, strict=True):
                (held,) = server.expect(response, 200)
                assert held["user_coupon_id"] == user_coupon[i]
                assert (held["status"], held["order_id"], held["used_at"]) == (
                    "ISSUED",
                    None,
                    None,
                )
            after = server.expect(await client.get(f"/coupons/{coupon['id']}"), 200)
            assert after["remaining_quantity"] == CANCEL_USERS - len(coupon_users)

            # Ranking: every sale cancelled, so nothing is popular, on either worker.
            async def ranking_empty() -> bool:
                return all(served == [] for served in await served_rankings(server, client))

            await eventually("both workers to drop the cancelled sales", ranking_empty, 10)

            # Cancelling again changes nothing.
            again = await asyncio.gather(
                *(
                    client.post(f"/orders/{o['order_id']}/cancel", headers=u.headers)
                    for u, o in zip(users[:20], orders[:20], strict=True)
                )
            )
            assert {(r.status_code, server.error_code(r)) for r in again} == {
                (409, "ORDER_NOT_CANCELLABLE")
            }
            listed = await bounded(
                [client.get("/me/orders", headers=u.headers) for u in users], SETUP_CONCURRENCY
            )
            assert [
                [(o["order_id"], o["status"]) for o in server.expect(r, 200)["items"]]
                for r in listed
            ] == [[(o["order_id"], "CANCELLED")] for o in orders]

        await server.assert_audit_clean(ranking=True)


# -- 2. one Idempotency-Key, 50 times at once -------------------------------------------

IDEM_COPIES = 50
IDEM_CHARGE = 100_000
IDEM_PRICE = 9_000
IDEM_STOCK = 20


async def send_copies(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], body: dict[str, Any]
) -> list[httpx.Response]:
    """``IDEM_COPIES`` identical POSTs at once, each on its own connection."""
    return list(
        await asyncio.gather(
            *(client.post(path, headers=headers, json=body) for _ in range(IDEM_COPIES))
        )
    )


def one_effect(server: LiveServer, responses: list[httpx.Response]) -> dict[str, Any]:
    """Check the copies' answers: exactly one fresh 201; every other one a replay of it
    (same status and body, ``Idempotent-Replayed: true``) or 409 ``IDEMPOTENCY_KEY_IN_USE``.
    Returns the fresh 201's body."""
    assert not [r for r in responses if r.status_code >= 500], [r.text for r in responses]
    fresh = [
        r for r in responses if r.status_code == 201 and "Idempotent-Replayed" not in r.headers
    ]
    assert len(fresh) == 1, [(r.status_code, dict(r.headers), r.text) for r in fresh]
    first: dict[str, Any] = fresh[0].json()
    kinds: Counter[str] = Counter()
    for r in responses:
        if r is fresh[0]:
            kinds["fresh"] += 1
        elif r.status_code == 201:
            assert r.headers.get("Idempotent-Replayed") == "true", dict(r.headers)
            assert r.json() == first
            kinds["replayed"] += 1
        else:
            assert (r.status_code, server.error_code(r)) == (409, "IDEMPOTENCY_KEY_IN_USE"), (
                r.status_code,
                r.text,
            )
            assert "Idempotent-Replayed" not in r.headers
            kinds["in_use"] += 1
    assert sum(kinds.values()) == IDEM_COPIES, kinds
    return first


async def test_one_idempotency_key_sent_50_times_at_once_has_one_effect(
    live_server: LiveServer,
) -> None:
    server = live_server
    with anyio.fail_after(120):
        async with server.client(connections=IDEM_COPIES) as client:
            admin = await server.admin_headers(client)
            product = await server.create_product(
                client,
                admin,
                name="Limited",
                variants=[{"sku": "LTD", "name": "One", "price": IDEM_PRICE, "stock": IDEM_STOCK}],
            )
            variant_id = product["variants"][0]["id"]
            (user,) = await server.seed_users(client, 1, prefix="tapper", charge=IDEM_CHARGE)

            # POST /orders (pay: true): one order, one payment, stock down once.
            order_key = {**user.headers, "Idempotency-Key": "order-7f3c1b"}
            order_body = {"items": [{"variant_id": variant_id, "quantity": 2}], "pay": True}
            order = one_effect(server, await send_copies(client, "/orders", order_key, order_body))
            assert order["status"] == "PAID"
            assert order["paid_amount"] == 2 * IDEM_PRICE

            retry = await client.post("/orders", headers=order_key, json=order_body)
            assert retry.status_code == 201, retry.text
            assert retry.headers.get("Idempotent-Replayed") == "true"
            assert retry.json() == order

            reused = await client.post(
                "/orders",
                headers=order_key,
                json={"items": [{"variant_id": variant_id, "quantity": 1}], "pay": True},
            )
            assert (reused.status_code, server.error_code(reused)) == (
                422,
                "IDEMPOTENCY_KEY_REUSED",
            ), reused.text

            mine = server.expect(await client.get("/me/orders", headers=user.headers), 200)
            assert [(o["order_id"], o["status"]) for o in mine["items"]] == [
                (order["order_id"], "PAID")
            ]
            detail = server.expect(await client.get(f"/products/{product['id']}"), 200)
            assert [v["stock"] for v in detail["variants"]] == [IDEM_STOCK - 2]
            ledger = await wallet_ledger(server, client, user)
            assert [(r["type"], r["amount"], r["order_id"]) for r in ledger] == [
                ("CHARGE", IDEM_CHARGE, None),
                ("PAYMENT", -2 * IDEM_PRICE, order["order_id"]),
            ]

            # POST /me/wallet/charges: one charge.
            charge_key = {**user.headers, "Idempotency-Key": "charge-2b9e44"}
            charge = one_effect(
                server,
                await send_copies(client, "/me/wallet/charges", charge_key, {"amount": 7_000}),
            )
            balance = IDEM_CHARGE - 2 * IDEM_PRICE + 7_000
            assert (charge["amount"], charge["balance"]) == (7_000, balance)

            retry = await client.post(
                "/me/wallet/charges", headers=charge_key, json={"amount": 7_000}
            )
            assert retry.status_code == 201, retry.text
            assert retry.headers.get("Idempotent-Replayed") == "true"
            assert retry.json() == charge

            reused = await client.post(
                "/me/wallet/charges", headers=charge_key, json={"amount": 8_000}
            )
            assert (reused.status_code, server.error_code(reused)) == (
                422,
                "IDEMPOTENCY_KEY_REUSED",
            ), reused.text

            wallet = server.expect(await client.get("/me/wallet", headers=user.headers), 200)
            assert wallet["balance"] == balance
            ledger = await wallet_ledger(server, client, user)
            assert [(r["type"], r["amount"]) for r in ledger] == [
                ("CHARGE", IDEM_CHARGE),
                ("PAYMENT", -2 * IDEM_PRICE),
                ("CHARGE", 7_000),
            ]
            assert ledger[-1]["id"] == charge["transaction_id"]

        await server.assert_audit_clean(cli=False, ranking=True)


# -- 3. payment racing expiry ----------------------------------------------------------

RACE_USERS = 60
RACE_TIMEOUT_S = 2
RACE_CHARGE = 50_000
RACE_PRICE = 10_000
RACE_UNITS = 2
RACE_STOCK = RACE_USERS * RACE_UNITS + 10
#: Payments are sent from deadline - SPREAD_S to deadline + SPREAD_S.
SPREAD_S = 0.3


async def test_payment_racing_expiry_ends_paid_or_expired_never_both(
    server_factory: ServerFactory,
) -> None:
    server = await anyio.to_thread.run_sync(
        lambda: server_factory.start(
            {
                "FLASHSALE_ORDER_PAYMENT_TIMEOUT_S": str(RACE_TIMEOUT_S),
                "FLASHSALE_ORDER_EXPIRY_SWEEP_S": "0.05",
            }
        )
    )
    with anyio.fail_after(120):
        async with server.client(connections=RACE_USERS) as client:
            admin = await server.admin_headers(client)
            product = await server.create_product(
                client,
                admin,
                name="Drop",
                variants=[{"sku": "DROP", "name": "One", "price": RACE_PRICE, "stock": RACE_STOCK}],
            )
            variant_id = product["variants"][0]["id"]
            coupon = await server.create_coupon(client, admin, total_quantity=RACE_USERS)
            users = await server.seed_users(client, RACE_USERS, prefix="racer", charge=RACE_CHARGE)
            coupon_users = list(range(0, RACE_USERS, COUPON_EVERY))
            issued = await bounded(
                [
                    client.post(f"/coupons/{coupon['id']}/issue", headers=users[i].headers)
                    for i in coupon_users
                ],
                SETUP_CONCURRENCY,
            )
            user_coupon = {
                i: server.expect(r, 201)["user_coupon_id"]
                for i, r in zip(coupon_users, issued, strict=True)
            }

            def body(i: int) -> dict[str, Any]:
                b: dict[str, Any] = {
                    "items": [{"variant_id": variant_id, "quantity": RACE_UNITS}],
                    "pay": False,
                }
                if i in user_coupon:
                    b["user_coupon_id"] = user_coupon[i]
                return b

            placed = await asyncio.gather(
                *(
                    client.post("/orders", headers=u.headers, json=body(i))
                    for i, u in enumerate(users)
                )
            )
            orders = [server.expect(r, 201) for r in placed]
            assert {o["status"] for o in orders} == {"PENDING"}
            deadlines = [datetime.fromisoformat(o["expires_at"]).timestamp() for o in orders]

            # Order i is paid at its deadline + offset, the offsets spread evenly over
            # [-SPREAD_S, +SPREAD_S] and shuffled over the users (coupon or not).
            offsets = [
                -SPREAD_S + 2 * SPREAD_S * ((i * 37) % RACE_USERS) / (RACE_USERS - 1)
                for i in range(RACE_USERS)
            ]
            sent_at: list[float] = [0.0] * RACE_USERS

            async def pay(i: int) -> httpx.Response:
                await anyio.sleep(max(0.0, deadlines[i] + offsets[i] - time.time()))
                sent_at[i] = time.time() - deadlines[i]
                return await client.post(
                    f"/orders/{orders[i]['order_id']}/payment", headers=users[i].headers
                )

            paid = await asyncio.gather(*(pay(i) for i in range(RACE_USERS)))

            # A payment after the deadline is refused even before the sweeper has run;
            # wait for the sweeper to mark every unpaid order EXPIRED.
            async def final_states() -> list[dict[str, Any]]:
                got = await asyncio.gather(
                    *(
                        client.get(f"/orders/{o['order_id']}", headers=u.headers)
                        for u, o in zip(users, orders, strict=True)
                    )
                )
                return [server.expect(r, 200) for r in got]

            async def settled() -> bool:
                return all(o["status"] != "PENDING" for o in await final_states())

            await eventually("the sweeper to expire every unpaid order", settled, 10)
            finals = await final_states()
            ledgers = await asyncio.gather(*(wallet_ledger(server, client, u) for u in users))
            coupons = await asyncio.gather(
                *(client.get("/me/coupons", headers=users[i].headers) for i in coupon_users)
            )
            coupon_of = {
                i: server.expect(r, 200) for i, r in zip(coupon_users, coupons, strict=True)
            }

            outcomes: Counter[str] = Counter()
            timeline = []
            for i in range(RACE_USERS):
                order, response, final, ledger = orders[i], paid[i], finals[i], ledgers[i]
                timeline.append((round(sent_at[i], 3), response.status_code, final["status"]))
                outcomes[final["status"]] += 1
                amount = order["paid_amount"]
                if final["status"] == "PAID":
                    assert response.status_code == 200, (i, response.text, final)
                    assert response.json()["status"] == "PAID"
                    assert [(p["kind"], p["amount"]) for p in final["payments"]] == [
                        ("PAYMENT", amount)
                    ]
                    assert [(r["type"], r["amount"], r["order_id"]) for r in ledger] == [
                        ("CHARGE", RACE_CHARGE, None),
                        ("PAYMENT", -amount, order["order_id"]),
                    ]
                    assert final["paid_at"] is not None
                    assert datetime.fromisoformat(final["paid_at"]).timestamp() < deadlines[i]
                    if i in coupon_of:
                        (held,) = coupon_of[i]
                        assert (held["status"], held["order_id"]) == ("USED", order["order_id"])
                else:
                    assert final["status"] == "EXPIRED", final
                    assert (response.status_code, server.error_code(response)) == (
                        409,
                        "ORDER_NOT_PAYABLE",
                    ), (i, response.text, final)
                    assert response.json()["details"]["status"] == "EXPIRED"
                    assert final["payments"] == []
                    assert final["paid_at"] is None
                    assert [(r["type"], r["amount"]) for r in ledger] == [("CHARGE", RACE_CHARGE)]
                    if i in coupon_of:
                        (held,) = coupon_of[i]
                        assert (held["status"], held["order_id"]) == ("ISSUED", None)

            assert set(outcomes) <= {"PAID", "EXPIRED"}
            assert outcomes["PAID"] >= 1 and outcomes["EXPIRED"] >= 1, sorted(timeline)

            # Stock: held by the paid orders only.
            detail = server.expect(await client.get(f"/products/{product['id']}"), 200)
            assert [v["stock"] for v in detail["variants"]] == [
                RACE_STOCK - RACE_UNITS * outcomes["PAID"]
            ]
            wallets = await asyncio.gather(
                *(client.get("/me/wallet", headers=u.headers) for u in users)
            )
            assert [server.expect(w, 200)["balance"] for w in wallets] == [
                RACE_CHARGE - (o["paid_amount"] if f["status"] == "PAID" else 0)
                for o, f in zip(orders, finals, strict=True)
            ]

        await server.assert_audit_clean(cli=False, ranking=True)
