"""A stand-in for the data platform: receives outbox events, deduplicated by ``event_id``.

``flashsale data-platform`` serves :func:`create_app`; the relay
(:mod:`flashsale.outbox.relay`) posts to its ``/events``. It can be made to fail or
slow down, to exercise the relay's retries and the at-least-once contract.
:mod:`flashsale.data_platform.client` reads back what it stored.
"""

from flashsale.data_platform.app import create_app
from flashsale.data_platform.client import read_all_events, read_all_events_sync
from flashsale.data_platform.store import EventStore, Stats, StoredEvent

__all__ = [
    "EventStore",
    "Stats",
    "StoredEvent",
    "create_app",
    "read_all_events",
    "read_all_events_sync",
]
