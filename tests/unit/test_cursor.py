"""Opaque keyset cursors: what ``encode_cursor`` makes ``decode_cursor`` reads back;
anything else is ``INVALID_CURSOR`` (422)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flashsale.api.deps import decode_cursor, encode_cursor
from flashsale.db.types import MAX_ID
from flashsale.errors import InvalidCursor


@settings(deadline=None)  # a shared, loaded CI machine must not flake
@given(st.integers(min_value=1, max_value=MAX_ID))
def test_roundtrip(last_id: int) -> None:
    cursor = encode_cursor(last_id)
    assert cursor.isascii() and "=" not in cursor and len(cursor) <= 64
    assert decode_cursor(cursor) == last_id


def test_none_is_the_first_page() -> None:
    assert decode_cursor(None) is None


def _b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!",
        "not a cursor",
        "@@@@",
        "A",  # a lone base64 character is never valid
        _b64("abc"),
        _b64("1.5"),
        _b64("0"),  # ids start at 1
        _b64("-5"),
        _b64(str(MAX_ID + 1)),
        _b64(str(10**30)),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),  # not UTF-8
    ],
)
def test_garbage_is_refused(cursor: str) -> None:
    with pytest.raises(InvalidCursor) as exc:
        decode_cursor(cursor)
    assert (exc.value.code, exc.value.status) == ("INVALID_CURSOR", 422)
