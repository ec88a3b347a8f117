"""``flashsale demo``: a flash sale against real servers, with a report and an audit.

Modules:

- :mod:`flashsale.demo.server` -- :class:`~flashsale.demo.server.ServerProcess`, the real
  service in a child process group (also used by the end-to-end tests), and
  :class:`~flashsale.demo.server.DataPlatformProcess`, the data-platform stand-in.
- :mod:`flashsale.demo.client` -- the asyncio load driver (round-robin over one or
  several instances) and per-scenario tallies, in total and per instance.
- :mod:`flashsale.demo.world` -- the demo's own account of the catalog, users and orders.
- :mod:`flashsale.demo.common` -- the demo's parameters, its error and the helpers that
  check and note what the service answered.
- :mod:`flashsale.demo.seeding` -- the catalog, the coupon and the charged users, over HTTP.
- :mod:`flashsale.demo.scenarios` -- the coupon rush, the limited rush and the flash-deal
  expiry release.
- :mod:`flashsale.demo.shopper` -- ordinary shopping (pay-later, cancellations, carts,
  idempotent retries).
- :mod:`flashsale.demo.checks` -- the end checks of what the service serves (expiries,
  stock, wallets, the popular ranking).
- :mod:`flashsale.demo.events` -- the end checks of the outbox, the orders, the
  idempotency keys and the events the stand-in received.
- :mod:`flashsale.demo.transactions` -- database transactions per coupon issued or order
  placed, from every instance's ``/metrics`` (and ``pg_stat_database`` on PostgreSQL).
- :mod:`flashsale.demo.server_latency` -- server-side latency percentiles of each rush,
  from the same scrapes of every instance's request latency histogram.
- :mod:`flashsale.demo.report` -- the printed report.
- :mod:`flashsale.demo.run` -- argument parsing, the demo's database (a temporary SQLite
  file, or a scratch database on a PostgreSQL server) and the whole run.

The heavy imports (aiohttp, tqdm) wait until :func:`main` runs, so ``flashsale`` commands
other than ``demo`` do not pay for them.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Run ``flashsale demo`` with ``argv`` (arguments after ``demo``); return the exit code.

    Exit codes: 0 when every check and the audit passed, 1 when anything was wrong (the
    report lists why), 2 for bad arguments, 130 when interrupted.
    """
    from flashsale.demo.run import main as run_main

    return run_main(argv)
