"""``ReadCache``: hits, the age bound, invalidation, coalescing, the size bound, headers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest

from flashsale.catalog.cache import (
    Entry,
    Fill,
    Filled,
    ReadCache,
    list_key,
    popular_key,
    product_key,
)

pytestmark = pytest.mark.anyio


class Clock:
    """A fake monotonic clock (seconds)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Source:
    """A fake database: each fill returns the current ``version`` and counts itself."""

    def __init__(self) -> None:
        self.version = 0
        self.calls = 0

    def fill(self, product_ids: Iterable[int] = ()) -> Fill:
        async def run() -> Filled:
            self.calls += 1
            return f"v{self.version}".encode(), product_ids

        return run


def cache_of(max_age_s: float = 1.0, **kw: int) -> tuple[ReadCache, Clock]:
    clock = Clock()
    return ReadCache(max_age_s, clock=clock, **kw), clock


async def test_a_hit_serves_the_stored_body_without_a_fill() -> None:
    cache, _clock = cache_of()
    db = Source()
    first = await cache.get(product_key(1), db.fill([1]))
    db.version = 1  # changed behind the cache's back
    again = await cache.get(product_key(1), db.fill([1]))
    assert again is first and again.body == b"v0"
    assert (db.calls, cache.fills, cache.hits) == (1, 1, 1)


async def test_an_entry_lives_at_most_max_age_from_the_start_of_its_read() -> None:
    cache, clock = cache_of(1.0)
    db = Source()
    await cache.get(product_key(1), db.fill())
    db.version = 1
    clock.now += 0.999
    assert (await cache.get(product_key(1), db.fill())).body == b"v0"
    clock.now += 0.001
    entry = await cache.get(product_key(1), db.fill())
    assert entry.body == b"v1" and entry.filled_at == clock.now
    assert db.calls == 2


async def test_zero_disables_storing_and_sharing() -> None:
    cache, _clock = cache_of(0.0)
    db = Source()
    assert not cache.enabled
    for version in range(3):
        db.version = version
        assert (await cache.get(product_key(1), db.fill())).body == f"v{version}".encode()
    assert (db.calls, len(cache), cache.hits) == (3, 0, 0)


async def test_concurrent_misses_are_one_fill() -> None:
    cache, _clock = cache_of()
    release = asyncio.Event()
    calls = 0

    async def slow() -> Filled:
        nonlocal calls
        calls += 1
        await release.wait()
        return b"body", [1]

    waiters = [asyncio.create_task(cache.get(product_key(1), slow)) for _ in range(50)]
    await asyncio.sleep(0.01)
    release.set()
    entries = await asyncio.gather(*waiters)
    assert calls == 1 and cache.fills == 1
    assert {id(e) for e in entries} == {id(entries[0])}
    assert len(cache) == 1


async def test_a_failed_fill_fails_its_waiters_and_is_not_stored() -> None:
    cache, _clock = cache_of()
    release = asyncio.Event()

    async def failing() -> Filled:
        await release.wait()
        raise LookupError("no such product")

    waiters = [asyncio.create_task(cache.get(product_key(9), failing)) for _ in range(3)]
    await asyncio.sleep(0.01)
    release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, LookupError) for r in results)
    assert len(cache) == 0
    db = Source()
    assert (await cache.get(product_key(9), db.fill())).body == b"v0"


async def test_a_waiter_going_away_does_not_cancel_the_fill() -> None:
    cache, _clock = cache_of()
    release = asyncio.Event()

    async def slow() -> Filled:
        await release.wait()
        return b"body", [1]

    first = asyncio.create_task(cache.get(product_key(1), slow))
    second = asyncio.create_task(cache.get(product_key(1), slow))
    await asyncio.sleep(0.01)
    first.cancel()
    release.set()
    assert (await second).body == b"body"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert len(cache) == 1


async def test_invalidate_products_drops_their_pages_and_the_lists_showing_them() -> None:
    cache, _clock = cache_of()
    db = Source()
    keys = {
        "p1": product_key(1),
        "p2": product_key(2),
        "page with 1": list_key(2, None),
        "page with 3": list_key(2, 2),
        "popular": popular_key(5, 3, "quantity"),
    }
    shows = {"p1": [1], "p2": [2], "page with 1": [1, 2], "page with 3": [3], "popular": []}
    for name, key in keys.items():
        await cache.get(key, db.fill(shows[name]))
    db.version = 1
    cache.invalidate_products([1])
    bodies = {name: (await cache.get(key, db.fill(shows[name]))).body for name, key in keys.items()}
    assert bodies == {
        "p1": b"v1",
        "p2": b"v0",
        "page with 1": b"v1",
        "page with 3": b"v0",
        "popular": b"v0",  # shows no stock
    }


async def test_ranking_changed_drops_every_popular_answer_and_the_products() -> None:
    cache, _clock = cache_of()
    db = Source()
    keys = [popular_key(5, 3, "quantity"), popular_key(1, 7, "orders"), product_key(4)]
    for key in keys:
        await cache.get(key, db.fill([4] if key[0] == "product" else []))
    await cache.get(product_key(5), db.fill([5]))
    db.version = 1
    cache.ranking_changed([4])
    assert [(await cache.get(k, db.fill())).body for k in keys] == [b"v1"] * 3
    assert (await cache.get(product_key(5), db.fill())).body == b"v0"


async def test_invalidate_all() -> None:
    cache, _clock = cache_of()
    db = Source()
    await cache.get(product_key(1), db.fill([1]))
    await cache.get(list_key(20, None), db.fill([1]))
    cache.invalidate_all()
    assert len(cache) == 0


async def test_a_change_during_a_fill_is_not_hidden_by_it() -> None:
    """A fill that was reading when a change was learnt answers its waiters but is not
    stored, and a request after the change does not join it: it reads again."""
    cache, _clock = cache_of()
    release = asyncio.Event()

    async def old_read() -> Filled:
        await release.wait()
        return b"before", [1]

    for invalidate in (
        lambda: cache.invalidate_products([1]),
        lambda: cache.ranking_changed([1]),
        cache.invalidate_all,
    ):
        release.clear()
        early = asyncio.create_task(cache.get(product_key(1), old_read))
        await asyncio.sleep(0.01)
        invalidate()
        late = await cache.get(product_key(1), Source().fill([1]))
        assert late.body == b"v0"
        release.set()
        assert (await early).body == b"before"
        assert (await cache.get(product_key(1), Source().fill())).body == b"v0"
        cache.invalidate_all()


async def test_list_fills_in_progress_are_discarded_by_any_stock_change() -> None:
    cache, _clock = cache_of()
    release = asyncio.Event()

    async def page() -> Filled:
        await release.wait()
        return b"old page", [7]

    early = asyncio.create_task(cache.get(list_key(20, None), page))
    await asyncio.sleep(0.01)
    cache.invalidate_products([99])  # may be on the page: its id is not known yet
    release.set()
    await early
    assert len(cache) == 0


async def test_the_number_of_entries_is_bounded_oldest_first() -> None:
    cache, clock = cache_of(10.0, max_entries=3)
    db = Source()
    for product_id in range(1, 6):
        clock.now += 0.1
        await cache.get(product_key(product_id), db.fill([product_id]))
    assert len(cache) == 3
    db.version = 1
    got = {p: (await cache.get(product_key(p), db.fill([p]))).body for p in (3, 4, 5)}
    assert got == dict.fromkeys((3, 4, 5), b"v0")


async def test_expired_entries_are_swept_when_another_is_stored() -> None:
    cache, clock = cache_of(1.0)
    db = Source()
    for cursor in range(100):  # a crawler over many cursors
        await cache.get(list_key(20, cursor), db.fill([cursor]))
    assert len(cache) == 100
    clock.now += 1.5
    await cache.get(product_key(1), db.fill([1]))
    assert len(cache) == 1


@pytest.mark.parametrize(
    ("max_age_s", "age_s", "max_age", "age"),
    [
        (1.0, 0.0, 1, 0),
        (1.0, 0.001, 0, 0),  # the default: fresh now, not to be reused downstream
        (1.0, 0.6, 0, 0),
        (10.0, 0.0, 10, 0),
        (10.0, 0.2, 9, 0),
        (10.0, 3.4, 9, 3),  # max-age - Age = 6 ≤ 6.6 s left
        (10.0, 12.0, 12, 12),  # served late to a fill's waiters: nothing left
        (2.5, 1.0, 2, 1),
    ],
)
def test_headers(max_age_s: float, age_s: float, max_age: int, age: int) -> None:
    cache, clock = cache_of(max_age_s)
    entry = Entry(b"{}", clock.now, frozenset())
    clock.now += age_s
    headers = cache.headers(entry)
    assert headers == {"Cache-Control": f"public, max-age={max_age}", "Age": str(age)}
    assert max_age - age <= max(0.0, max_age_s - age_s)
    assert max_age <= max_age_s or age_s > max_age_s


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_age_s"):
        ReadCache(-1)
    with pytest.raises(ValueError, match="max_entries"):
        ReadCache(1, max_entries=0)
