"""200 concurrent wallet charges by one user, against a real server with 2 workers
(docs/invariants.md#money)."""

from __future__ import annotations

import asyncio
from itertools import accumulate
from typing import TYPE_CHECKING, Any

import anyio
import pytest

if TYPE_CHECKING:
    from .conftest import LiveServer


pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.anyio]

CHARGES = 200


async def test_concurrent_charges_all_land_in_the_ledger(live_server: LiveServer) -> None:
    amounts = [1_000 + 137 * i for i in range(CHARGES)]  # distinct, 1,000..28,263 KRW
    with anyio.fail_after(180):
        async with live_server.client(connections=CHARGES) as client:
            (user,) = await live_server.seed_users(client, 1, prefix="saver")

            responses = await asyncio.gather(
                *(
                    client.post("/me/wallet/charges", headers=user.headers, json={"amount": a})
                    for a in amounts
                )
            )

            bodies = [live_server.expect(r, 201) for r in responses]
            assert sorted(b["amount"] for b in bodies) == sorted(amounts)
            # Each charge saw its own balance; the last one saw the sum.
            assert len({b["balance"] for b in bodies}) == CHARGES
            assert max(b["balance"] for b in bodies) == sum(amounts)

            wallet = live_server.expect(await client.get("/me/wallet", headers=user.headers), 200)
            assert wallet["balance"] == sum(amounts)

            ledger: list[dict[str, Any]] = []
            cursor: str | None = None
            while True:
                params: dict[str, Any] = {"limit": 50}
                if cursor is not None:
                    params["cursor"] = cursor
                page = live_server.expect(
                    await client.get(
                        "/me/wallet/transactions", headers=user.headers, params=params
                    ),
                    200,
                )
                ledger.extend(page["items"])
                cursor = page["next_cursor"]
                if not cursor:
                    break
                assert len(ledger) <= CHARGES, "the ledger pages do not end"

            assert len(ledger) == CHARGES
            assert len({row["id"] for row in ledger}) == CHARGES
            assert {row["type"] for row in ledger} == {"CHARGE"}
            assert sorted(row["amount"] for row in ledger) == sorted(amounts)
            # In ledger order, every balance_after is the running sum.
            ledger.sort(key=lambda row: row["id"])
            assert [row["balance_after"] for row in ledger] == list(
                accumulate(row["amount"] for row in ledger)
            )

        await live_server.assert_audit_clean()
