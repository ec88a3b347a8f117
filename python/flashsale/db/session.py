"""The request transaction and its commit/rollback hooks.

One transaction per request (STYLE): :func:`transaction` opens it, commits on
success and rolls back on any error. Services never commit; they register what
must happen in this process once the outcome is known -- e.g. the order service
releases its C++ stock reservation if the transaction rolls back, and records the
sale in the ranking only after it commits (the C++ core never grants what the
database has not confirmed, docs/architecture.md#the-c-core).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

_COMMIT = "flashsale.after_commit"
_ROLLBACK = "flashsale.after_rollback"


def after_commit(session: AsyncSession | Session, hook: Callable[[], None]) -> None:
    """Run ``hook`` once the request's transaction has committed (``session`` is the
    request's session, or its sync side inside ``run_sync``: they share ``info``)."""
    session.info.setdefault(_COMMIT, []).append(hook)


def after_rollback(session: AsyncSession | Session, hook: Callable[[], None]) -> None:
    """Run ``hook`` if the request's transaction rolls back (or its commit fails)."""
    session.info.setdefault(_ROLLBACK, []).append(hook)


def _run(session: AsyncSession, key: str) -> None:
    hooks: list[Callable[[], None]] = session.info.pop(key, [])
    session.info.pop(_COMMIT, None)
    session.info.pop(_ROLLBACK, None)
    for hook in hooks:
        try:
            hook()
        except Exception:  # a hook must not turn a decided outcome into an error
            log.exception("transaction hook failed")


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """Open a session, commit it when the block succeeds, roll back otherwise."""
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            _run(session, _ROLLBACK)
            raise
        _run(session, _COMMIT)
