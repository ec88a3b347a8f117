"""Writing order events into the outbox (docs/decisions/0002-transactional-outbox.md;
audited as docs/invariants.md#events).

An event is inserted by the same transaction as the change it reports, so it
exists exactly when the change committed. The relay (:mod:`flashsale.outbox.relay`)
delivers it at least once; every instance's ranking follower reads it too.

Event JSON (sent verbatim to the data platform)::

    {"event_id": "<uuid4>", "type": "order.paid" | "order.cancelled",
     "occurred_at": "<ISO 8601 UTC>", "user_id": 7,
     "order": {<the order as GET /orders/{id} returns it>}}
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Final

from sqlalchemy import Connection, insert

from flashsale.db.models import outbox
from flashsale.db.prepared import Prepared
from flashsale.orders.schemas import OrderOut

ORDER_PAID: Final = "order.paid"
ORDER_CANCELLED: Final = "order.cancelled"

_INSERT_EVENT = Prepared(
    insert(outbox),
    columns=[
        "event_id",
        "type",
        "order_id",
        "payload",
        "created_at",
        "available_at",
        "attempts",
    ],
)


def order_event(
    event_id: str, event_type: str, occurred_at: datetime, order: OrderOut, user_id: int
) -> str:
    """The JSON text of an order event."""
    return json.dumps(
        {
            "event_id": event_id,
            "type": event_type,
            "occurred_at": occurred_at.isoformat(),
            "user_id": user_id,
            "order": order.model_dump(mode="json"),
        },
        separators=(",", ":"),
    )


def new_order_event(
    event_type: str, order: OrderOut, user_id: int, now: datetime
) -> tuple[str, str, str]:
    """A new event's ``(event_id, type, payload)``: a fresh UUID4 (also the idempotency
    key the relay sends with it) and the JSON text of :func:`order_event`, for a caller
    that writes the outbox row itself (:func:`flashsale.orders.repository.write_order`)."""
    event_id = str(uuid.uuid4())
    return event_id, event_type, order_event(event_id, event_type, now, order, user_id)


def add_order_event(
    conn: Connection, event_type: str, order: OrderOut, user_id: int, now: datetime
) -> str:
    """Insert an ``order.paid``/``order.cancelled`` event in the caller's transaction.

    Returns the new ``event_id`` (a UUID4 string), which is also the idempotency
    key the relay sends with it.
    """
    event_id, _type, payload = new_order_event(event_type, order, user_id, now)
    _INSERT_EVENT.run(
        conn,
        {
            "event_id": event_id,
            "type": event_type,
            "order_id": order.order_id,
            "payload": payload,
            "created_at": now,
            "available_at": now,
            "attempts": 0,
        },
    )
    return event_id
