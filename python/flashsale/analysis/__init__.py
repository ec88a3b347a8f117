"""Sales-ranking analysis for notebooks: which products led, how stable the top is.

Needs the ``analysis`` extra (``pip install 'flashsale[analysis]'``: pandas,
matplotlib). Never imports the web service (``flashsale.api``, FastAPI): it reads
the database with a synchronous engine and uses the C++ ranking directly.

- :mod:`~flashsale.analysis.frames`: the sales frame (one row per (order,
  product) line, UTC times, integer money) and loaders from any
  ``FLASHSALE_DATABASE_URL``.
- :mod:`~flashsale.analysis.online_retail`: the same frame from a shop's
  "Online Retail" CSV export.
- :mod:`~flashsale.analysis.rolling`: top-k per step over a sliding window,
  replayed through :class:`flashsale.SlidingWindowRanking`, and its pandas reference.
- :mod:`~flashsale.analysis.measures`: rank trajectories, stability (overlap,
  Kendall's tau), units against orders, spike detection.
- :mod:`~flashsale.analysis.plots`: bump chart, hour-by-day heatmap, metric
  comparison, spike chart (matplotlib).
"""

from __future__ import annotations

from flashsale.analysis.frames import (
    ORDER_COLUMNS,
    PRODUCT_COLUMNS,
    SALES_COLUMNS,
    check_sales,
    empty_sales,
    load_orders,
    load_products,
    load_sales,
)
from flashsale.analysis.measures import (
    SPIKE_COLUMNS,
    compare_rankings,
    detect_spikes,
    kendall_tau_b,
    rank_trajectories,
    stability,
    topk_kendall_tau,
    units_per_period,
    units_vs_orders,
)
from flashsale.analysis.online_retail import OnlineRetailImport, read_online_retail
from flashsale.analysis.plots import bump_chart, hour_day_heatmap, metric_comparison, spike_chart
from flashsale.analysis.rolling import (
    TOP_COLUMNS,
    SaleEvents,
    rolling_top,
    rolling_top_reference,
    sale_events,
    top_at,
)

__all__ = [
    "ORDER_COLUMNS",
    "PRODUCT_COLUMNS",
    "SALES_COLUMNS",
    "SPIKE_COLUMNS",
    "TOP_COLUMNS",
    "OnlineRetailImport",
    "SaleEvents",
    "bump_chart",
    "check_sales",
    "compare_rankings",
    "detect_spikes",
    "empty_sales",
    "hour_day_heatmap",
    "kendall_tau_b",
    "load_orders",
    "load_products",
    "load_sales",
    "metric_comparison",
    "rank_trajectories",
    "read_online_retail",
    "rolling_top",
    "rolling_top_reference",
    "sale_events",
    "spike_chart",
    "stability",
    "top_at",
    "topk_kendall_tau",
    "units_per_period",
    "units_vs_orders",
]
