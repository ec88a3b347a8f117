"""The ``flashsale`` command line (DESIGN §7)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from flashsale.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from flashsale.db.migrate import upgrade

    settings = Settings()
    upgrade(settings.database_url)
    if settings.admin_email and settings.admin_password:
        _create_admin(settings, settings.admin_email, settings.admin_password.get_secret_value())
    uvicorn.run(
        "flashsale.api.app:create_app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
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
    report = run_audit(url)
    print(report.render())
    return 0 if report.ok else 1


def _migrate(args: argparse.Namespace) -> int:
    from flashsale.db.migrate import upgrade

    upgrade(args.database_url or Settings().database_url)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flashsale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run migrations, then the web service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--log-level", default="warning")
    serve.set_defaults(func=_serve)

    users = sub.add_parser("users", help="manage users")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    admin = users_sub.add_parser("create-admin", help="create an admin user")
    admin.add_argument("--email", required=True)
    admin.add_argument("--password", required=True)
    admin.set_defaults(func=_users_create_admin)

    audit = sub.add_parser("audit", help="check the invariants of DESIGN §6; exit 1 on failure")
    audit.add_argument("--database-url", default=None)
    audit.set_defaults(func=_audit)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--database-url", default=None)
    migrate.set_defaults(func=_migrate)

    # demo and bench parse their own flags.
    sub.add_parser(
        "demo", help="run the flash-sale demo (see `flashsale demo --help`)", add_help=False
    )
    sub.add_parser("bench", help="benchmarks: `flashsale bench core`", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flashsale`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if argv and argv[0] == "demo":
        from flashsale.demo import main as demo_main

        return demo_main(argv[1:])
    if argv and argv[0] == "bench":
        if len(argv) < 2 or argv[1] not in {"core"}:
            print("usage: flashsale bench core [options]", file=sys.stderr)
            return 2
        from flashsale.bench.core import main as bench_core

        return bench_core(argv[2:])
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
