"""``flashsale bench http``: the service under load, against a baseline, in one run.

Starts Flashsale (``flashsale serve``, ``--workers`` processes) on a scratch database —
a SQLite file by default, a scratch PostgreSQL database (``flashsale_bench_<hex>``,
dropped afterwards unless ``--keep``) on the server of ``--database-url`` — and,
one after the other for each scenario, the baseline service the bench ships
(:mod:`flashsale.bench.http.baseline`: lock, check, write, in the same FastAPI +
SQLAlchemy stack) on its own scratch database with the same rows. ``wrk`` (installed
with ``apt-get`` when missing) drives each with the Lua script shipped in
``scripts/bench.lua``.

Scenarios (``--scenario``, repeatable; all by default), each ``--seconds`` (15) per
service: ``healthz`` (the floor), ``paid-orders`` (random users, 1–3 random catalog
variants, paid at once), ``coupon-rush`` (100 coupons, every request a random one of
the users), ``limited-rush`` (100 units), ``hot-sku`` (every order on one variant),
``product-page`` (the page of a limited item while half the connections rush it).
Wallets and stock are sized so that nothing runs out but the rushes' items.

For each it prints req/s, p50/p99, the CPU µs per request of the server's processes
and PostgreSQL's (``/proc``), database transactions per success and the ratio to the
baseline; then the audit of Flashsale's database (exit 1 when it fails) and the goals
(met / not met). The figures, the commit and the settings go to ``--json``
(``bench-http.json``); ``--table PATH`` prints the Markdown table of such a file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["main"]

#: Access tokens outlive any run.
TOKEN_TTL_S = 6 * 3600


def build_parser() -> argparse.ArgumentParser:
    """The options of ``flashsale bench http``."""
    from flashsale.bench.http.runner import SCENARIO_NAMES

    parser = argparse.ArgumentParser(
        prog="flashsale bench http",
        description="Flashsale under HTTP load (wrk) against the baseline service, "
        "scenario by scenario, in one run.",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="a postgresql:// URL: run on scratch databases created on that server "
        "(default: SQLite files in a temporary folder)",
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes per server")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--seconds", type=float, default=None, help="per scenario (default 15)")
    parser.add_argument("--users", type=int, default=None, help="users (default 10,000)")
    parser.add_argument(
        "--catalog", type=int, default=None, help="catalog variants (default 1,000)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI size: 2 s per scenario, 1,000 users, 200 catalog variants",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIO_NAMES,
        default=None,
        help="run only this scenario (repeatable)",
    )
    parser.add_argument("--json", default="bench-http.json", help="where the figures go")
    parser.add_argument(
        "--table",
        default=None,
        metavar="PATH",
        help="print the Markdown table of a JSON file written by a run, and run nothing",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the databases, tokens and server logs"
    )
    return parser


def _serve_baseline(argv: Sequence[str]) -> int:
    from flashsale.bench.http.baseline import serve

    parser = argparse.ArgumentParser(prog="flashsale bench http serve-baseline")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    return serve(args.host, args.port, args.workers)


def _commit() -> tuple[str | None, bool]:
    """The source checkout's commit and whether it has uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None, False
    return head or None, bool(status)


def _wrk_version(wrk: str) -> str:
    proc = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    return (
        (proc.stdout or proc.stderr).splitlines()[0].strip() if proc.stdout or proc.stderr else ""
    )


def _table(path: str) -> int:
    from flashsale.bench.http.report import goals, markdown, markdown_goals

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"flashsale bench http: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    print(markdown(data))
    print()
    print("Goals:")
    print()
    print(markdown_goals(goals(data)))
    return 0


def _run(args: argparse.Namespace) -> int:
    from flashsale.audit import run_audit
    from flashsale.bench.http.report import goals, print_table, render_goals
    from flashsale.bench.http.runner import (
        SCENARIOS,
        BenchError,
        Databases,
        Settings,
        ensure_wrk,
        run_all,
    )
    from flashsale.bench.http.seed import Layout, seed, write_tokens
    from flashsale.db.engine import is_sqlite
    from flashsale.db.migrate import upgrade
    from flashsale.db.provision import create_database, drop_database
    from flashsale.demo.server import ServerError

    seconds = args.seconds if args.seconds is not None else (2.0 if args.quick else 15.0)
    users = args.users if args.users is not None else (1_000 if args.quick else 10_000)
    catalog = args.catalog if args.catalog is not None else (200 if args.quick else 1_000)
    if min(args.workers, args.connections, args.threads, users, catalog) < 1 or seconds < 1:
        print(
            "flashsale bench http: --workers, --connections, --threads, --users, --catalog "
            "must be >= 1 and --seconds >= 1",
            file=sys.stderr,
        )
        return 2
    if args.connections < args.threads:
        print("flashsale bench http: --connections must be >= --threads", file=sys.stderr)
        return 2
    postgres = args.database_url is not None and not is_sqlite(args.database_url)
    wanted = args.scenario or [s.name for s in SCENARIOS]
    scenarios = [s for s in SCENARIOS if s.name in wanted]

    try:
        wrk = ensure_wrk()
    except BenchError as exc:
        print(f"flashsale bench http: {exc}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="flashsale-bench-http-"))
    layout = Layout(users=users, catalog=catalog)
    secret = secrets.token_urlsafe(48)
    tokens = workdir / "tokens.txt"
    created: list[str] = []
    code = 1
    try:
        write_tokens(tokens, users, secret, TOKEN_TTL_S)
        if postgres:
            names = (
                f"flashsale_bench_{secrets.token_hex(6)}",
                f"flashsale_bench_{secrets.token_hex(6)}",
            )
            urls = []
            for name in names:
                urls.append(create_database(args.database_url, name))
                created.append(name)
            databases = Databases(urls[0], urls[1], args.database_url, names)
        else:
            databases = Databases(
                f"sqlite:///{workdir / 'flashsale.db'}", f"sqlite:///{workdir / 'baseline.db'}"
            )
        for url in (databases.flashsale, databases.baseline):
            upgrade(url)
            seed(url, layout)
        database = "postgresql" if postgres else "sqlite"
        print(
            f"flashsale bench http: {database}, {args.workers} workers per server, wrk "
            f"{args.threads} threads × {args.connections} connections, {seconds:g} s per "
            f"scenario and service; {users:,} users, {catalog:,} catalog variants; "
            f"work folder {workdir}",
            flush=True,
        )
        settings = Settings(
            seconds=seconds,
            connections=args.connections,
            threads=args.threads,
            workers=args.workers,
            postgres=postgres,
            wrk=wrk,
            workdir=workdir,
        )
        try:
            records = run_all(scenarios, settings, databases, layout, tokens, secret)
        except (BenchError, ServerError) as exc:
            print(f"flashsale bench http: {exc}", file=sys.stderr)
            return 1
        report = run_audit(databases.flashsale)
        commit, dirty = _commit()
        data: dict[str, Any] = {
            "bench": "flashsale bench http",
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit,
            "dirty": dirty,
            "settings": {
                "database": database,
                "workers": args.workers,
                "connections": args.connections,
                "threads": args.threads,
                "seconds": seconds,
                "quick": args.quick,
                "users": users,
                "catalog": catalog,
                "layout": layout.as_dict(),
                "python": platform.python_version(),
                "wrk": _wrk_version(wrk),
                "cpus": os.cpu_count(),
            },
            "results": records,
            "audit": {"ok": report.ok, "checks": report.checks, "failures": report.failures},
        }
        data["goals"] = goals(data)
        for record in records:  # logs live in the work folder, gone unless --keep
            if not args.keep:
                record.pop("log", None)
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print()
        print_table(data)
        print()
        print("Goals (printed, never asserted):")
        print(render_goals(data["goals"]))
        print()
        print("Audit of Flashsale's database (the baseline writes no outbox):")
        print(report.render())
        problems = [r for r in records if r["server_errors"] or r["tracebacks"]]
        for r in problems:
            print(
                f"warning: {r['service']} in {r['scenario']}: {r['server_errors']} 5xx answers, "
                f"{r['tracebacks']} tracebacks in its log",
                file=sys.stderr,
            )
        print(f"\nfigures written to {args.json}")
        code = 0 if report.ok else 1
        return code
    finally:
        if args.keep:
            print(f"kept: {workdir}" + (f", databases {', '.join(created)}" if created else ""))
        else:
            for name in created:
                drop_database(args.database_url, name)
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: Sequence[str]) -> int:
    """Entry point of ``flashsale bench http``; returns the exit code."""
    argv = list(argv)
    if argv and argv[0] == "serve-baseline":
        return _serve_baseline(argv[1:])
    args = build_parser().parse_args(argv)
    if args.table is not None:
        return _table(args.table)
    return _run(args)
