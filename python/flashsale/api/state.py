"""What one process shares between requests."""

from __future__ import annotations

from dataclasses import dataclass

from flashsale.catalog.cache import ReadCache
from flashsale.db.engine import Database
from flashsale.db.writer import GroupCommitWriter
from flashsale.gates import CouponIssueGate, StockGate
from flashsale.ranking.service import RankingService
from flashsale.settings import Settings


@dataclass
class AppState:
    """Settings, database engines, the group-commit writer, the C++ gates, the ranking
    and the catalog read cache of this process."""

    settings: Settings
    db: Database
    stock_gate: StockGate
    coupon_gate: CouponIssueGate
    ranking: RankingService
    read_cache: ReadCache
    writer: GroupCommitWriter
