"""Mail jobs share the outbox with the order events, and only the relay's mail route
looks at them: the ranking follower, the audit's event checks and the data platform
ignore them (docs/operations.md#mail, docs/invariants.md#events)."""

from __future__ import annotations

from functools import partial

import pytest

from flashsale.api.background import follow_order_events
from flashsale.db.types import utcnow
from flashsale.mail.outbox import add_mail

from .support import Api, StartApp, expect

pytestmark = pytest.mark.anyio


async def _queue_mail(api: Api, to: str) -> str:
    op = partial(add_mail, to=to, subject="Hello", text="A mail between two orders.\n")
    event_id: str = await api.state.writer.submit(lambda tx: op(tx.conn, now=utcnow()))
    return event_id


def _ranked(body: dict[str, object]) -> list[tuple[int, int, int]]:
    items = body["items"]
    assert isinstance(items, list)
    return [(i["product_id"], i["quantity"], i["orders"]) for i in items]


async def test_the_follower_and_the_audit_ignore_mail_jobs(api: Api, start_app: StartApp) -> None:
    p = await api.product((1_000, 100))
    variant = p["variants"][0]["id"]
    user = await api.user(balance=100_000)
    # Its own follower task runs every 2 s too: the checks hold whoever follows first.
    async with start_app(ranking_poll_s=2.0) as follower:
        ranking = follower.state.ranking
        expect(await api.order(user, (variant, 2)), 201)
        await _queue_mail(api, "a@example.com")
        cancelled = expect(await api.order(user, (variant, 3)), 201)
        await _queue_mail(api, "b@example.com")
        expect(await api.post(f"/orders/{cancelled['order_id']}/cancel", user), 200)

        # Two sales and one cancellation recorded; the mail jobs neither counted nor
        # waited for as gaps.
        assert await follow_order_events(follower.state) in (0, 3)
        assert ranking.pending_gaps == 0
        assert _ranked(expect(await follower.get("/products/popular"), 200)) == [(p["id"], 2, 1)]
        await _queue_mail(api, "c@example.com")
        assert await follow_order_events(follower.state) == 0
        assert ranking.pending_gaps == 0

    assert len(api.snapshot()["outbox"]) == 6  # 2 order.paid, 1 order.cancelled, 3 mails
    api.assert_audit_ok()  # one order.paid per paid order, one order.cancelled, mail aside
