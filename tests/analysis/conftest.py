"""Analysis test fixtures: hand-made sales frames and one seeded database per session
(SQLite or PostgreSQL, as ``FLASHSALE_TEST_DATABASE`` says).

Matplotlib draws with the Agg backend (no display). ``seeded`` runs ``flashsale
seed`` once per session (a month, a few hundred orders, through the services);
tests only read it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

from flashsale.analysis import SALES_COLUMNS
from flashsale.analysis.frames import astype
from flashsale.db.provision import create_database, drop_database

matplotlib.use("Agg")

DATA = Path(__file__).parent / "data"
T0 = pd.Timestamp("2026-03-02 00:00", tz="UTC")  # a Monday, midnight UTC


def sales_frame(rows: Sequence[tuple[int, int, int, str]]) -> pd.DataFrame:
    """A sales frame from ``(order_id, product_id, quantity, time)`` rows.

    ``time`` is an offset from :data:`T0` (``"3h"``, ``"1D 2h"``); a negative
    quantity is a cancellation line.
    """
    frame = pd.DataFrame(
        {
            "order_id": [r[0] for r in rows],
            "user_id": pd.array([r[0] % 7 + 1 for r in rows], dtype="Int64"),
            "product_id": [r[1] for r in rows],
            "product_name": [f"product {r[1]}" for r in rows],
            "quantity": [r[2] for r in rows],
            "amount": [r[2] * 1_000 for r in rows],
            "paid_at": [T0 + pd.Timedelta(r[3]) for r in rows],
            "status": ["CANCELLED" if r[2] < 0 else "PAID" for r in rows],
        }
    )
    return pd.DataFrame({c: astype(frame[c], t) for c, t in SALES_COLUMNS.items()})


@dataclass
class Seeded:
    url: str
    history_days: int
    orders: int


SEED_ORDERS = 700


@pytest.fixture(scope="session")
def seeded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, database_kind: str
) -> Iterator[Seeded]:
    """A month seeded through the services (``flashsale seed``), shared read-only."""
    from flashsale.cli import main

    server_url = None
    if database_kind == "postgresql":
        server_url = request.getfixturevalue("postgres_server_url")
        name = f"flashsale_seeded_{secrets.token_hex(4)}"
        url = create_database(server_url, name)
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('seeded') / 'flashsale.db'}"
    argv = ["seed", "--history-days", "30", "--orders", str(SEED_ORDERS), "--seed", "11"]
    try:
        assert main([*argv, "--database-url", url]) == 0
        yield Seeded(url=url, history_days=30, orders=SEED_ORDERS)
    finally:
        if server_url is not None:
            drop_database(server_url, name)
