"""The ``flashsale`` command line (docs/cli.md).

``serve``, ``users create-admin``, ``audit``, ``migrate``, ``data-platform``,
``mail-sink`` and ``seed`` are parsed here; ``demo`` and ``bench`` hand their arguments to their own
parsers (:mod:`flashsale.demo.run`, :mod:`flashsale.bench.core`,
:mod:`flashsale.bench.ranking`, :mod:`flashsale.bench.http`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence

from flashsale.settings import Settings

#: prometheus_client's multiprocess folder (:data:`flashsale.metrics.MULTIPROC_DIR_ENV`;
#: not imported from there: that import would load prometheus_client too early).
_METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _serve(args: argparse.Namespace) -> int:
    """``flashsale serve``: migrate, bootstrap the admin, run uvicorn until stopped.

    With ``--workers > 1`` and no ``PROMETHEUS_MULTIPROC_DIR`` given, metrics go to
    a fresh temporary folder, removed at exit. A folder given by the caller is
    used as is and kept; it should be emptied between runs (prometheus_client).
    """
    # Several workers each count their own requests; a scrape reaches one of them.
    # prometheus_client's multiprocess mode merges per-process files, and it is
    # chosen when the library is imported, so the folder is set here, before
    # anything imports it and before uvicorn spawns the workers (which inherit it).
    metrics_dir = None
    if args.workers > 1 and not os.environ.get(_METRICS_DIR_ENV):
        metrics_dir = tempfile.mkdtemp(prefix="flashsale-metrics-")
        os.environ[_METRICS_DIR_ENV] = metrics_dir
    try:
        return _run_server(args)
    finally:
        if metrics_dir is not None:
            os.environ.pop(_METRICS_DIR_ENV, None)
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _run_server(args: argparse.Namespace) -> int:
    import uvicorn

    from flashsale.api.observability import configure_logging
    from flashsale.db.migrate import upgrade

    settings = Settings()
    level = args.log_level or settings.log_level
    # The workers read their settings from the environment: same level there.
    os.environ["FLASHSALE_LOG_LEVEL"] = level
    configure_logging(level, json=settings.log_format == "json")
    upgrade(settings.database_url)
    if settings.admin_email and settings.admin_password:
        _create_admin(settings, settings.admin_email, settings.admin_password.get_secret_value())
    uvicorn.run(
        "flashsale.api.app:create_app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=level,
        # No uvicorn formatters: its loggers propagate to the root handler of
        # configure_logging (text or JSON, with the request id), here and in workers.
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    return 0


def _create_admin(settings: Settings, email: str, password: str) -> tuple[int, bool]:
    from flashsale.auth.schemas import check_password_rule
    from flashsale.auth.service import ensure_admin
    from flashsale.db.engine import Database
    from flashsale.db.session import transaction

    check_password_rule(password)

    async def run() -> tuple[int, bool]:
        db = Database.from_settings(settings)
        try:
            async with transaction(db.write_session) as session:
                return await ensure_admin(
                    session, email=email, password=password, hash_cost=settings.password_hash_cost
                )
        finally:
            await db.dispose()

    return asyncio.run(run())


def _users_create_admin(args: argparse.Namespace) -> int:
    from flashsale.db.migrate import upgrade

    settings = Settings()
    upgrade(settings.database_url)
    try:
        user_id, created = _create_admin(settings, args.email, args.password)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"admin {args.email} (user {user_id}) {'created' if created else 'already exists'}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from flashsale.audit import run_audit

    url = args.database_url or Settings().database_url
    report = run_audit(url, args.service_url)
    print(report.render())
    return 0 if report.ok else 1


def _migrate(args: argparse.Namespace) -> int:
    from flashsale.db.migrate import upgrade

    upgrade(args.database_url or Settings().database_url)
    return 0


def _data_platform(args: argparse.Namespace) -> int:
    import uvicorn

    from flashsale.data_platform import create_app

    try:
        app = create_app(args.database, args.fail_rate, args.latency_ms, args.seed)
    except ValueError as exc:  # pydantic.ValidationError: a rate or latency out of range
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # One worker: the failure injection and its PUT /config live in the process.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def _mail_sink(args: argparse.Namespace) -> int:
    """``flashsale mail-sink``: exit 0 when stopped (SIGINT/SIGTERM), 2 on bad input."""
    from flashsale.mail.sink import parse_login, serve

    http_port = args.http_port if args.http_port is not None else args.port + 1
    try:
        if not 0.0 <= args.fail_rate <= 1.0:
            raise ValueError(f"--fail-rate must be in [0, 1], got {args.fail_rate}")
        if http_port == args.port:
            raise ValueError("--http-port must differ from --port")
        login = parse_login(args.login) if args.login else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    asyncio.run(
        serve(
            args.host, args.port, http_port, fail_rate=args.fail_rate, seed=args.seed, login=login
        )
    )
    return 0


def _seed(args: argparse.Namespace) -> int:
    """``flashsale seed``: exit 0, 1 if the audit fails afterwards, 2 on bad input (e.g.
    a database that is not empty)."""
    from flashsale.seed import seed_history

    url = args.database_url or Settings().database_url
    try:
        summary = asyncio.run(
            seed_history(
                url,
                history_days=args.history_days,
                orders_n=args.orders,
                seed=args.seed,
                users=args.users,
                products_n=args.products,
            )
        )
    except ValueError as exc:
        print(f"flashsale seed: {exc}", file=sys.stderr)
        return 2
    print(summary.render())
    return 0 if summary.audit_ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flashsale",
        description="The flashsale command line: the web service and its tools (docs/cli.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run migrations, then the web service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--log-level", default=None, help="default: FLASHSALE_LOG_LEVEL (warning)")
    serve.set_defaults(func=_serve)

    users = sub.add_parser("users", help="manage users")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    admin = users_sub.add_parser("create-admin", help="create an admin user")
    admin.add_argument("--email", required=True)
    admin.add_argument("--password", required=True)
    admin.set_defaults(func=_users_create_admin)

    audit = sub.add_parser(
        "audit", help="check the invariants (docs/invariants.md); exit 1 on failure"
    )
    audit.add_argument("--database-url", default=None)
    audit.add_argument(
        "--service-url",
        action="append",
        default=[],
        help="base URL of a running instance whose served ranking is checked (invariant 5); "
        "repeat for several",
    )
    audit.set_defaults(func=_audit)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--database-url", default=None)
    migrate.set_defaults(func=_migrate)

    platform = sub.add_parser(
        "data-platform",
        help="run a stand-in data platform that stores outbox events by event_id",
        description="Stand-in receiver: POST /events (deduplicated by event_id), "
        "GET /events, GET /stats, PUT /config. Point FLASHSALE_DATA_PLATFORM_URL "
        "at http://HOST:PORT/events.",
    )
    platform.add_argument("--host", default="127.0.0.1")
    platform.add_argument("--port", type=int, default=9000)
    platform.add_argument(
        "--database", default="data-platform.db", help="SQLite file of the received events"
    )
    platform.add_argument(
        "--fail-rate", type=float, default=0.0, help="fraction of posts answered 503 (0-1)"
    )
    platform.add_argument(
        "--latency-ms", type=int, default=0, help="milliseconds each post waits first"
    )
    platform.add_argument("--seed", type=int, default=None, help="seed of the failure draws")
    platform.set_defaults(func=_data_platform)

    sink = sub.add_parser(
        "mail-sink",
        help="run a local SMTP server that keeps the mail it receives (for development)",
        description="SMTP on --port (deduplicated by Message-ID), HTTP on --http-port: "
        "GET /messages, DELETE /messages, GET /stats, PUT /config. Point "
        "FLASHSALE_SMTP_URL at smtp://HOST:PORT. Messages are kept in memory.",
    )
    sink.add_argument("--host", default="127.0.0.1")
    sink.add_argument("--port", type=int, default=1025, help="SMTP port")
    sink.add_argument(
        "--http-port",
        type=int,
        default=None,
        help="HTTP port of GET /messages (default: --port + 1)",
    )
    sink.add_argument(
        "--login", default=None, help="USER:PASSWORD a client must log in with (AUTH)"
    )
    sink.add_argument(
        "--fail-rate", type=float, default=0.0, help="fraction of messages answered 451 (0-1)"
    )
    sink.add_argument("--seed", type=int, default=None, help="seed of the failure draws")
    sink.set_defaults(func=_mail_sink)

    seed = sub.add_parser(
        "seed",
        help="seed a month of sales (see `flashsale seed --help`)",
        description="Fill an empty database with a realistic history of sales, through the "
        "domain services.",
    )
    seed.add_argument("--history-days", type=int, default=30, help="days of history, ending now")
    seed.add_argument("--orders", type=int, default=2_000, help="order attempts")
    seed.add_argument("--users", type=int, default=None, help="shoppers (default: orders / 8)")
    seed.add_argument("--products", type=int, default=120, help="regular products")
    seed.add_argument(
        "--database-url", default=None, help="default: FLASHSALE_DATABASE_URL or the settings'"
    )
    seed.add_argument("--seed", type=int, default=7, help="random seed (same seed, same month)")
    seed.set_defaults(func=_seed)

    # demo and bench parse their own flags.
    sub.add_parser(
        "demo", help="run the flash-sale demo (see `flashsale demo --help`)", add_help=False
    )
    sub.add_parser("bench", help="benchmarks: `flashsale bench core|ranking|http`", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flashsale`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "serve":  # serve logs as FLASHSALE_LOG_FORMAT/_LEVEL say
        logging.basicConfig(
            level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
    if argv and argv[0] == "demo":
        from flashsale.demo import main as demo_main

        return demo_main(argv[1:])
    if argv and argv[0] == "bench":
        if len(argv) < 2 or argv[1] not in {"core", "ranking", "http"}:
            print("usage: flashsale bench core|ranking|http [options]", file=sys.stderr)
            return 2
        if argv[1] == "http":
            from flashsale.bench.http import main as bench_http

            return bench_http(argv[2:])
        if argv[1] == "ranking":
            from flashsale.bench.ranking import main as bench_ranking

            return bench_ranking(argv[2:])
        from flashsale.bench.core import main as bench_core

        return bench_core(argv[2:])
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
