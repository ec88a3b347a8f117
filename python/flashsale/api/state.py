"""What one process shares between requests."""

from __future__ import annotations

from dataclasses import dataclass

from flashsale.db.engine import Database
from flashsale.gates import CouponIssueGate, StockGate
from flashsale.ranking.service import RankingService
from flashsale.settings import Settings


@dataclass
class AppState:
    """Settings, database engines, the C++ gates and the ranking of this process."""

    settings: Settings
    db: Database
    stock_gate: StockGate
    coupon_gate: CouponIssueGate
    ranking: RankingService
