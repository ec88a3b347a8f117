"""Flashsale: an e-commerce order service for flash-sale traffic.

The concurrency primitives of the C++ core are re-exported here so that the
package can be used as a plain library (``pip install flashsale``) without the
web service:

- :class:`StockPool` -- per-SKU stock counters with all-or-nothing reservations.
- :class:`CouponGate` -- first-come coupon counters, at most N per user.
- :class:`SlidingWindowRanking` -- time-bucketed sales counts and top-k.
"""

from __future__ import annotations

try:
    from flashsale._core import (
        CouponGate,
        IssueResult,
        RankEntry,
        SlidingWindowRanking,
        StockPool,
    )
except ImportError as exc:  # pragma: no cover - only without a built extension
    raise ImportError(
        "flashsale._core (the C++ extension) is missing: install the package with "
        "`pip install .` (or `pip install --no-build-isolation -e .`) so that it is built."
    ) from exc

# The package's one version: the build (scikit-build-core's regex provider, see
# pyproject.toml) reads it from this line for the distribution's metadata and the
# C++ extension's ``flashsale._core.__version__``.
__version__ = "0.1.0"

__all__ = [
    "CouponGate",
    "IssueResult",
    "RankEntry",
    "SlidingWindowRanking",
    "StockPool",
    "__version__",
]
