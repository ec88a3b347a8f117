"""Group commit: the admitted writes of a process committed many to a transaction.

A flash crowd's winners each need one short write (an order, a coupon issue). One
transaction per request makes the database's commit (and, on SQLite, the single
write lock and the event loop's thread hops per statement) the limit. The
:class:`GroupCommitWriter` runs instead one writer thread per process with a
synchronous connection: it takes every operation queued while the previous batch
ran, runs each in a savepoint of one transaction and commits them together.

An operation is a synchronous function ``op(tx) -> result`` over a :class:`Tx`: the
connection plus ``after_commit``/``after_rollback`` hooks. Its semantics:

- one operation's refusal (a :class:`~flashsale.errors.FlashsaleError` it raises, e.g.
  a balance short or a coupon used concurrently, or a constraint it broke) rolls back
  its own savepoint only; its neighbours commit;
- its caller hears the result only after the batch has committed, so a crash loses
  no acknowledged operation; when the commit fails, every operation of the batch
  gets the error and nothing of the batch is written;
- a batch PostgreSQL aborts as retryable (deadlock, serialization failure) runs
  again, whole, up to ``attempts`` times;
- ``after_commit`` hooks run on the event loop's thread once the batch committed;
  ``after_rollback`` hooks (a refused order's units go back to the gate) and
  ``after_release`` hooks (a cancellation's units come back) run in the writer's
  thread at once, so the batch's next operation sees the gate as it would one by one
  (``tests/db/test_writer_batching.py`` checks that batched and one-by-one runs end
  alike); when a batch fails, its operations' release hooks are undone and their
  rollback hooks run.

The same operation functions also run in an async session's transaction outside the
server (:func:`run_in_session`: ``flashsale seed``, the CLI), so each rule and
statement is written once.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import ARRAY, BigInteger, Connection, Engine, bindparam, func, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from flashsale.db.dialect import retryable_sqlstate
from flashsale.db.models import coupons, variants, wallets
from flashsale.db.prepared import Prepared, run_driver_sql
from flashsale.db.session import after_commit, after_rollback
from flashsale.metrics import DB_TRANSACTIONS, WRITER_BATCH_SIZE

__all__ = ["GroupCommitWriter", "Locks", "Op", "SessionTx", "Tx", "run_in_session"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Hook = Callable[[], None]


class Tx:
    """What an operation sees of its transaction: ``conn`` (a synchronous SQLAlchemy
    :class:`~sqlalchemy.Connection`) and the hooks to run once the outcome is known."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.commit_hooks: list[Hook] = []
        self.rollback_hooks: list[Hook] = []
        self.release_hooks: list[tuple[Hook, Hook]] = []

    def after_commit(self, hook: Hook) -> None:
        """Run ``hook`` (on the event loop's thread) once this operation has committed."""
        self.commit_hooks.append(hook)

    def after_rollback(self, hook: Hook) -> None:
        """Run ``hook`` as soon as this operation is refused, or its transaction fails.

        In a writer it runs in the writer's thread, before the batch's next operation
        (which must see, say, the units a refused order held back in the gate): it must
        be thread-safe, as the gates and the ranking's claims are.
        """
        self.rollback_hooks.append(hook)

    def after_release(self, hook: Hook, undo: Hook) -> None:
        """Run ``hook`` as soon as this operation's writes are in (its savepoint
        released), so that the batch's next operations see it (units a cancellation
        gave back, in the stock gate); ``undo`` runs if the batch then fails. Both run
        in the writer's thread and must be thread-safe. In an async session (seed, CLI),
        ``hook`` runs after its commit."""
        self.release_hooks.append((hook, undo))


class SessionTx(Tx):
    """A :class:`Tx` inside an async session's transaction (seed, CLI): hooks go to
    the session's (:func:`flashsale.db.session.after_commit`), run when it commits or
    rolls back."""

    def __init__(self, session: Session) -> None:
        super().__init__(session.connection())
        self._session = session

    def after_commit(self, hook: Hook) -> None:
        after_commit(self._session, hook)

    def after_rollback(self, hook: Hook) -> None:
        after_rollback(self._session, hook)

    def after_release(self, hook: Hook, undo: Hook) -> None:
        after_commit(self._session, hook)


Op = Callable[[Tx], T]


async def run_in_session(session: AsyncSession, op: Op[T]) -> T:
    """Run ``op`` in ``session``'s transaction (not through a writer): its writes
    commit or roll back with the rest of the session's work."""
    return await session.run_sync(lambda sync_session: op(SessionTx(sync_session)))


@dataclass(frozen=True)
class Locks:
    """Rows an operation will lock, known before it runs: the buyer's wallet
    (``wallets``, by user id), the variants of its lines, the coupon it issues.

    On PostgreSQL the writer locks the rows of a whole batch first, each table in id
    order (wallets, then variants, then coupons: the order every operation locks them
    in), so two instances' batches never wait on each other in a cycle. Without it a
    batch holding one order's variants and waiting for another's would deadlock with
    a batch doing the reverse, and PostgreSQL takes ``deadlock_timeout`` (1 s) to
    notice. Rows an operation finds only while running (a ``product_id``-only line's
    variant, a cancelled order's lines) are locked then; the rare deadlock that
    leaves is retried.
    """

    wallets: frozenset[int] = frozenset()
    variants: frozenset[int] = frozenset()
    coupons: frozenset[int] = frozenset()


_PRELOCKS = (
    (wallets, wallets.c.user_id, "wallets"),
    (variants, variants.c.id, "variants"),
    (coupons, coupons.c.id, "coupons"),
)
# PostgreSQL only; an array parameter keeps one statement text (and one server-side
# prepared statement) whatever the batch's number of rows.
_PRELOCK_STATEMENTS = [
    (
        name,
        Prepared(
            select(column)
            .where(column == func.any(bindparam("p_ids", type_=ARRAY(BigInteger))))
            .order_by(column)
            .with_for_update()
        ),
    )
    for _table, column, name in _PRELOCKS
]


@dataclass
class _Pending(Generic[T]):
    op: Op[T]
    future: asyncio.Future[T]
    locks: Locks | None = None
    tx: Tx | None = None
    outcome: tuple[bool, Any] | None = None  # (ok, result or exception)
    hooks: list[Hook] = field(default_factory=list)  # run on the loop with the answer

    def abandon(self) -> None:
        """This operation's batch failed: undo what its release hooks did and run its
        rollback hooks, unless a refusal already ran them (in the writer's thread)."""
        tx, self.tx = self.tx, None
        if tx is None:
            return
        if self.outcome is not None and self.outcome[0]:
            _run_hooks([undo for _hook, undo in reversed(tx.release_hooks)])
        if self.outcome is None or self.outcome[0]:
            _run_hooks(tx.rollback_hooks)
        self.outcome = None


_STOP = object()


class GroupCommitWriter:
    """Writer threads of one process, committing queued operations in batches.

    Args:
        engine: a synchronous engine (``flashsale.db.engine.make_sync_engine``) the
            writer takes one connection from, for its whole life.
        max_batch: operations per transaction at most.
        window_s: when a batch would hold a single operation, wait this long once for
            others to join it (a few milliseconds: more winners per commit).
        attempts: runs of a batch PostgreSQL aborts as retryable (the first included).
        threads: writer threads, each with its own connection, taking batches from one
            queue. One on SQLite (one writer at a time anyway); on PostgreSQL several
            keep the server busy while one waits for its round trips (each batch still
            commits as a whole; see :class:`Locks` for how they avoid deadlocks).
        lock_path: a file whose exclusive ``flock`` the writer holds around each batch
            (SQLite): the writers of a machine's processes then queue in the kernel,
            which wakes the next one as soon as a batch commits, instead of polling
            SQLite's write lock in its busy handler, which sleeps 1 to 100 ms a try.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = 128,
        window_s: float = 0.002,
        attempts: int = 5,
        name: str = "flashsale-writer",
        lock_path: str | None = None,
        threads: int = 1,
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.window_s = window_s
        self.attempts = attempts
        self.lock_path = lock_path
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        self._commits = DB_TRANSACTIONS.labels(outcome="commit")
        self._rollbacks = DB_TRANSACTIONS.labels(outcome="rollback")

    def start(self) -> None:
        """Start the writer threads; call from the event loop that will submit."""
        self._loop = asyncio.get_running_loop()
        for thread in self._threads:
            thread.start()

    async def stop(self) -> None:
        """Finish what is queued, then stop the threads and close their connections."""
        running = [thread for thread in self._threads if thread.is_alive()]
        for _thread in running:
            self._queue.put(_STOP)
        for thread in running:
            await asyncio.to_thread(thread.join)
        self.engine.dispose()

    async def submit(self, op: Op[T], locks: Locks | None = None) -> T:
        """Run ``op`` in the next batch; its result once the batch has committed.

        ``locks`` names the rows ``op`` will lock, so that on PostgreSQL the batch locks
        them up front in a fixed order (see :class:`Locks`).

        Raises:
            whatever ``op`` raised (it changed nothing), or the batch's database error
            (nothing of the batch was written).
        """
        if self._loop is None:
            raise RuntimeError("the writer is not started")
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put(_Pending(op, future, locks))
        return await future

    # -- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        lock = open(self.lock_path, "a+b") if self.lock_path else None  # noqa: SIM115
        try:
            with self.engine.connect() as conn:
                while True:
                    batch, stop = self._take()
                    if batch:
                        if lock is not None:
                            fcntl.flock(lock, fcntl.LOCK_EX)
                        try:
                            self._write(conn, batch)
                        finally:
                            if lock is not None:
                                fcntl.flock(lock, fcntl.LOCK_UN)
                    if stop:
                        return
        finally:
            if lock is not None:
                lock.close()

    def _take(self) -> tuple[list[_Pending[Any]], bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        waited = False
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                if waited or len(batch) > 1 or self.window_s <= 0:
                    break
                waited = True
                time.sleep(self.window_s)
                continue
            if item is _STOP:
                self._queue.put(_STOP)  # stop after this batch
                break
            batch.append(item)
        return batch, False

    def _write(self, conn: Connection, batch: list[_Pending[Any]]) -> None:
        WRITER_BATCH_SIZE.observe(len(batch))
        for attempt in range(1, self.attempts + 1):
            try:
                self._attempt(conn, batch)
            except Exception as exc:
                _discard(conn)
                self._rollbacks.inc()
                for p in batch:  # the reservations of the aborted run go back first
                    p.abandon()
                if retryable_sqlstate(exc) is not None and attempt < self.attempts:
                    log.info("writer batch aborted (%s), run %d", exc, attempt + 1)
                    continue
                for p in batch:
                    p.outcome, p.hooks = (False, exc), []
                break
            else:
                self._commits.inc()
                break
        self._finish(batch)

    def _attempt(self, conn: Connection, batch: list[_Pending[Any]]) -> None:
        with conn.begin():
            savepoints = _Savepoints(conn)
            if savepoints.postgres:
                _prelock(conn, [p.locks for p in batch if p.locks is not None])
            for p in batch:
                tx = p.tx = Tx(conn)
                savepoints.open()
                try:
                    result = p.op(tx)
                except Exception as refusal:
                    if isinstance(refusal, DBAPIError) and not isinstance(refusal, IntegrityError):
                        raise  # the connection or the transaction failed: the whole batch
                    # A refusal or a constraint this operation broke: only its savepoint.
                    savepoints.roll_back()
                    p.outcome, p.hooks = (False, refusal), []
                    _run_hooks(tx.rollback_hooks)
                    continue
                savepoints.keep()
                p.outcome, p.hooks = (True, result), tx.commit_hooks
                _run_hooks([hook for hook, _undo in tx.release_hooks])

    def _finish(self, batch: list[_Pending[Any]]) -> None:
        assert self._loop is not None

        def settle() -> None:
            for p in batch:
                _run_hooks(p.hooks)
                if p.future.done():  # the caller went away (cancelled)
                    continue
                assert p.outcome is not None
                ok, value = p.outcome
                if ok:
                    p.future.set_result(value)
                else:
                    p.future.set_exception(value)

        self._loop.call_soon_threadsafe(settle)


class _Savepoints:
    """One savepoint per operation of a batch, on the driver's cursor (SQLAlchemy's
    ``begin_nested`` costs two statements' worth of Python per operation).

    On PostgreSQL, where each statement is a round trip, a kept operation's
    ``RELEASE`` goes with the next one's ``SAVEPOINT`` in one simple query, and the
    last one is left to the commit (which releases every savepoint); a refused
    operation's ``ROLLBACK TO`` and ``RELEASE`` go together too. SQLite, in process,
    takes one statement per call.
    """

    _NAME = "flashsale_op"

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.postgres = conn.dialect.name == "postgresql"
        self._unreleased = False

    def open(self) -> None:
        if self._unreleased:
            run_driver_sql(self.conn, f"RELEASE SAVEPOINT {self._NAME}; SAVEPOINT {self._NAME}")
            self._unreleased = False
        else:
            run_driver_sql(self.conn, f"SAVEPOINT {self._NAME}")

    def keep(self) -> None:
        if self.postgres:
            self._unreleased = True
        else:
            run_driver_sql(self.conn, f"RELEASE SAVEPOINT {self._NAME}")

    def roll_back(self) -> None:
        undo = f"ROLLBACK TO SAVEPOINT {self._NAME}"
        if self.postgres:
            run_driver_sql(self.conn, f"{undo}; RELEASE SAVEPOINT {self._NAME}")
        else:
            run_driver_sql(self.conn, undo)
            run_driver_sql(self.conn, f"RELEASE SAVEPOINT {self._NAME}")


def _prelock(conn: Connection, locks: list[Locks]) -> None:
    """Lock the rows of a batch, table by table in id order (see :class:`Locks`)."""
    for name, statement in _PRELOCK_STATEMENTS:
        ids = sorted({i for lock in locks for i in getattr(lock, name)})
        if ids:
            statement.rows(conn, {"p_ids": ids})


def _discard(conn: Connection) -> None:
    """After a failed batch: roll back what is left and drop the connection (it reconnects
    on next use), so a half-ended transaction never leaks into the next batch."""
    try:
        if conn.in_transaction():
            conn.rollback()
    except Exception:
        log.warning("writer rollback failed; reconnecting", exc_info=True)
    conn.invalidate()


def _run_hooks(hooks: list[Hook]) -> None:
    for hook in hooks:
        try:
            hook()
        except Exception:  # a hook must not turn a decided outcome into an error
            log.exception("writer hook failed")
