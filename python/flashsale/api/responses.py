"""The error body (docs/api.md), shared by the error handlers and the idempotency store."""

from __future__ import annotations

from typing import Any

from fastapi.encoders import jsonable_encoder


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """``{"code": ..., "message": ..., "details": {...}}`` with JSON-safe details."""
    return {"code": code, "message": message, "details": jsonable_encoder(details or {})}
