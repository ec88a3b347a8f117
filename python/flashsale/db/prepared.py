"""Hot-path statements run on the driver's cursor, compiled once per dialect.

A paid order runs about a dozen statements. Through SQLAlchemy's
``Connection.execute`` each costs ≈ 90 µs of Python on top of the database's own
work (cache-key lookup, execution context, events, result object), several times
what SQLite spends running it, and it all runs in the group-commit writer's thread,
which every write of the process waits for. :class:`Prepared` keeps SQLAlchemy for
what it is good at (the statement is still a Core construct over the models'
tables, compiled by the dialect, with the columns' bind and result types), and runs
it without the per-call machinery: the SQL text, the order of its parameters and
their type conversions are worked out once per dialect (and, for ``IN`` lists, per
list length), then each call is one ``cursor.execute`` inside the caller's
transaction on the same connection.

What a call does not do that ``Connection.execute`` does: Python-side column
defaults (an insert must name every column it fills; a missing one raises
``KeyError``), ORM events and statement events. Driver errors are wrapped as
SQLAlchemy does (:class:`sqlalchemy.exc.IntegrityError` and so on), so callers and
the writer tell a refusal from a failed connection the same way either way.

On PostgreSQL, psycopg prepares a statement on the server after it has run a few
times on a connection, so the text being constant matters there too.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

__all__ = ["Prepared", "run_driver_sql"]

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Form:
    """One compiled form: SQL text, parameter names in order (positional paramstyles)
    or None (named), the bind conversions by parameter name, and the values of the
    parameters the statement binds itself (``status IN ('PAID', 'PENDING')``)."""

    sql: str
    names: tuple[str, ...] | None
    binds: Mapping[str, Callable[[Any], Any]]
    fixed: Mapping[str, Any]  # values the statement binds itself (literals)
    required: frozenset[str]  # the parameters a call must give

    def parameters(self, params: Mapping[str, Any]) -> Any:
        """The driver's parameters for one call (a tuple or a dict).

        Raises:
            KeyError: a parameter of the statement is missing.
        """
        binds = self.binds
        if self.fixed:
            params = {**self.fixed, **params}
        if self.names is None:
            missing = self.required - params.keys()
            if missing:
                raise KeyError(f"missing parameters {sorted(missing)}")
            return {k: (binds[k](v) if k in binds else v) for k, v in params.items()}
        return tuple(
            binds[name](params[name]) if name in binds else params[name] for name in self.names
        )


class Prepared:
    """A Core statement (``select``/``insert``/``update``/``delete``, with
    ``bindparam`` parameters) run on the driver's cursor of a synchronous
    :class:`~sqlalchemy.Connection`, in whatever transaction that connection is in.

    Args:
        statement: the statement; its parameters are ``bindparam`` names.
        columns: for an insert, the columns its rows fill (every one of them: there
            are no Python-side defaults here); None for other statements.
        expanding: names of ``bindparam(..., expanding=True)`` parameters (``IN``
            lists); each call passes a non-empty sequence for each.

    Rows come back as named tuples (``row.id``, ``row[0]``), their values converted
    by the columns' types (UTC datetimes and so on).
    """

    def __init__(
        self,
        statement: ClauseElement,
        *,
        columns: Sequence[str] | None = None,
        expanding: Sequence[str] = (),
    ) -> None:
        self.statement = statement
        self.columns = tuple(columns) if columns is not None else None
        table = getattr(statement, "table", None)
        if self.columns is not None and table is not None:
            unknown = [c for c in self.columns if c not in table.c]
            if unknown:
                raise ValueError(f"{table.name} has no columns {unknown}")
        self.expanding = tuple(expanding)
        exported = getattr(statement, "exported_columns", None)
        self._result_columns = list(exported) if exported is not None else []
        self._row: Any = (
            namedtuple("Row", [c.key for c in self._result_columns], rename=True)
            if self._result_columns
            else None
        )
        self._compiled: dict[str, Any] = {}
        self._forms: dict[tuple[str, tuple[int, ...]], _Form] = {}  # (driver, IN lengths)
        self._results: dict[str, list[Processor]] = {}

    # -- compiling -----------------------------------------------------------------

    def _compile(self, dialect: Dialect) -> Any:
        compiled = self._compiled.get(_key(dialect))
        if compiled is None:
            kwargs: dict[str, Any] = {}
            if self.columns is not None:
                kwargs["column_keys"] = list(self.columns)
            compiled = self.statement.compile(dialect=dialect, **kwargs)
            self._compiled[_key(dialect)] = compiled
        return compiled

    def _form(self, dialect: Dialect, params: Mapping[str, Any]) -> _Form:
        lengths = tuple(len(params[name]) for name in self.expanding)
        key = (_key(dialect), lengths)
        form = self._forms.get(key)
        if form is None:
            compiled = self._compile(dialect)
            # Values only decide the shape (which names, how long each IN list).
            state = compiled.construct_expanded_state(dict(params))
            names = tuple(state.positiontup) if state.positiontup is not None else None
            binds = {
                name: bind.type.dialect_impl(dialect).bind_processor(dialect)
                for name, bind in compiled.binds.items()
            }
            binds.update(state.processors or {})  # the expanded IN-list names
            binds = {k: v for k, v in binds.items() if v is not None}
            given = self._flatten(params)
            fixed = {k: v for k, v in state.parameters.items() if k not in given}
            required = frozenset(state.parameters) - fixed.keys()
            form = _Form(state.statement, names, binds, fixed, required)
            self._forms[key] = form
        return form

    def _processors(self, dialect: Dialect) -> list[Processor]:
        procs = self._results.get(_key(dialect))
        if procs is None:
            procs = [
                c.type.dialect_impl(dialect).result_processor(dialect, None)
                for c in self._result_columns
            ]
            self._results[_key(dialect)] = procs
        return procs

    def _flatten(self, params: Mapping[str, Any]) -> dict[str, Any]:
        if not self.expanding:
            return dict(params)
        flat = {k: v for k, v in params.items() if k not in self.expanding}
        for name in self.expanding:
            for i, value in enumerate(params[name], start=1):
                flat[f"{name}_{i}"] = value
        return flat

    # -- running -------------------------------------------------------------------

    def rows(self, conn: Connection, params: Mapping[str, Any] | None = None) -> list[Any]:
        """Run the statement with ``params``; every row it returns (``[]`` when none)."""
        params = params or {}
        dialect = conn.dialect
        form = self._form(dialect, params)
        args = form.parameters(self._flatten(params))
        with _driver_cursor(conn, form.sql, args) as cursor:
            cursor.execute(form.sql, args)
            if self._row is None:
                return []
            raw = cursor.fetchall()
        procs = self._processors(dialect)
        if not any(procs):
            return [self._row._make(r) for r in raw]
        return [
            self._row._make([p(v) if p else v for p, v in zip(procs, r, strict=True)]) for r in raw
        ]

    def first(self, conn: Connection, params: Mapping[str, Any] | None = None) -> Any | None:
        """The first row, or None."""
        rows = self.rows(conn, params)
        return rows[0] if rows else None

    def scalar(self, conn: Connection, params: Mapping[str, Any] | None = None) -> Any | None:
        """The first column of the first row, or None when no row came back."""
        rows = self.rows(conn, params)
        return rows[0][0] if rows else None

    def scalar_one(self, conn: Connection, params: Mapping[str, Any] | None = None) -> Any:
        """The first column of the only row (an insert's id, say).

        Raises:
            LookupError: no row came back.
        """
        rows = self.rows(conn, params)
        if not rows:
            raise LookupError("the statement returned no row")
        return rows[0][0]

    def run(self, conn: Connection, params: Mapping[str, Any] | None = None) -> int:
        """Run a statement that returns no rows; the rows it changed."""
        params = params or {}
        dialect = conn.dialect
        form = self._form(dialect, params)
        args = form.parameters(self._flatten(params))
        with _driver_cursor(conn, form.sql, args) as cursor:
            cursor.execute(form.sql, args)
            return int(cursor.rowcount)

    def run_many(self, conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
        """Run the statement once per parameter set (``executemany``; no ``IN`` lists)."""
        rows = list(rows)
        if not rows:
            return
        dialect = conn.dialect
        form = self._form(dialect, rows[0])
        args = [form.parameters(r) for r in rows]
        with _driver_cursor(conn, form.sql, args) as cursor:
            cursor.executemany(form.sql, args)


@contextmanager
def _driver_cursor(conn: Connection, sql: str, args: Any) -> Iterator[Any]:
    """A cursor of ``conn``'s driver connection, closed afterwards; a driver error
    raised inside is re-raised as SQLAlchemy raises it (``sql`` and ``args`` for its
    message)."""
    dialect = conn.dialect
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        yield cursor
    except dialect.loaded_dbapi.Error as exc:
        raise _wrapped(dialect, sql, args, exc) from exc
    finally:
        cursor.close()


def _key(dialect: Dialect) -> str:
    """One compiled form per driver (psycopg and asyncpg write parameters differently)."""
    return f"{dialect.name}+{dialect.driver}"


def _wrapped(dialect: Dialect, sql: str, args: Any, exc: Exception) -> BaseException:
    """The driver's error as SQLAlchemy raises it (IntegrityError, OperationalError…)."""
    return DBAPIError.instance(sql, args, exc, dialect.loaded_dbapi.Error, dialect=dialect)


def run_driver_sql(conn: Connection, sql: str) -> None:
    """Run a parameterless statement (``SAVEPOINT op``…) on the driver's cursor of
    ``conn``, in its current transaction.

    Raises:
        sqlalchemy.exc.DBAPIError: the driver's error, wrapped as SQLAlchemy does.
    """
    with _driver_cursor(conn, sql, ()) as cursor:
        cursor.execute(sql)
