"""The figures of ``flashsale bench http`` as a table (terminal or Markdown) and the goals,
computed from the JSON the bench writes (so the README's table is generated from it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flashsale.bench import print_columns

HEADER = [
    "scenario",
    "service",
    "req/s",
    "successes/s",
    "p50 ms",
    "p99 ms",
    "CPU µs/req",
    "CPU µs/success",
    "db tx/success",
    "vs baseline",
]

#: Scenario names → the title the table shows.
TITLES = {
    "healthz": "`GET /healthz` (floor)",
    "paid-orders": "paid orders (1–3 lines)",
    "coupon-rush": "coupon rush (100 coupons)",
    "limited-rush": "limited-item rush (100 units)",
    "hot-sku": "hot SKU (one variant)",
    "product-page": "product page during a rush",
}
#: Scenarios whose successes are orders: compared on paid orders per second.
ORDER_SCENARIOS = ("paid-orders", "hot-sku")


def _find(records: Sequence[Mapping[str, Any]], scenario: str, service: str) -> Any:
    for record in records:
        if record["scenario"] == scenario and record["service"] == service:
            return record
    return None


def throughput(record: Mapping[str, Any]) -> float:
    """The figure compared with the baseline: paid orders/s for the order scenarios,
    requests/s otherwise (a rush is about answering the crowd)."""
    key = "successes_per_s" if record["scenario"] in ORDER_SCENARIOS else "rps"
    return float(record[key])


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def _ms(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def table_rows(data: Mapping[str, Any]) -> list[list[str]]:
    """The header and one row per (scenario, service), Flashsale first."""
    records: list[Mapping[str, Any]] = data["results"]
    rows = [list(HEADER)]
    for record in records:
        scenario = record["scenario"]
        ratio = ""
        if record["service"] == "flashsale":
            base = _find(records, scenario, "baseline")
            if base is not None and throughput(base) > 0:
                ratio = f"{throughput(record) / throughput(base):.1f}×"
        title = TITLES.get(scenario, scenario) if record["service"] == "flashsale" else ""
        per_success = record["cpu_us_per_success"] if scenario != "healthz" else None
        successes = record["successes_per_s"] if scenario != "healthz" else None
        rows.append(
            [
                title,
                record["service"],
                _num(record["rps"]),
                _num(successes),
                _ms(record["p50_ms"]),
                _ms(record["p99_ms"]),
                _num(record["cpu_us_per_request"]),
                _num(per_success),
                _num(record["db_tx_per_success"], 2) if scenario != "healthz" else "–",
                ratio,
            ]
        )
    return rows


def markdown(data: Mapping[str, Any]) -> str:
    """The table as Markdown, with a line of its settings and commit under it."""
    rows = table_rows(data)
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    lines.append("")
    lines.append(settings_line(data))
    return "\n".join(lines)


def settings_line(data: Mapping[str, Any]) -> str:
    """``database, workers, connections, seconds, commit, date`` in one sentence."""
    s = data["settings"]
    commit = (data.get("commit") or "unknown")[:12]
    if data.get("dirty"):
        commit += " (with uncommitted changes)"
    return (
        f"{s['database']}, {s['workers']} workers per server, wrk {s['threads']} threads × "
        f"{s['connections']} connections, {s['seconds']:g} s per scenario and service, "
        f"{s['users']:,} users, {s['catalog']:,} catalog variants; commit {commit}, "
        f"{data.get('date', '?')}, {s.get('cpus', '?')} CPUs."
    )


def print_table(data: Mapping[str, Any]) -> None:
    """The table as aligned columns."""
    print_columns(table_rows(data))


def goals(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals, each ``{"goal", "met" (True/False/None: not measured), "figure"}``."""
    records: list[Mapping[str, Any]] = data["results"]
    postgres = data["settings"]["database"] == "postgresql"

    def fs(scenario: str) -> Any:
        return _find(records, scenario, "flashsale")

    def base(scenario: str) -> Any:
        return _find(records, scenario, "baseline")

    found: list[dict[str, Any]] = []
    paid = fs("paid-orders")
    if postgres:
        goal = "paid orders ≥ 1,000/s with p99 ≤ 200 ms (PostgreSQL)"
        met = None if paid is None else paid["successes_per_s"] >= 1000 and paid["p99_ms"] <= 200
        figure = (
            ""
            if paid is None
            else f"{paid['successes_per_s']:,.0f}/s, p99 {paid['p99_ms']:,.1f} ms"
        )
    else:
        goal = "paid orders ≥ 1,000/s (SQLite)"
        met = None if paid is None else paid["successes_per_s"] >= 1000
        figure = "" if paid is None else f"{paid['successes_per_s']:,.0f}/s"
    found.append({"goal": goal, "met": met, "figure": figure})

    rush, rush_base = fs("coupon-rush"), base("coupon-rush")
    if rush is not None and rush_base is not None and rush_base["rps"] > 0:
        ratio = rush["rps"] / rush_base["rps"]
        met = ratio >= 5 and rush["p99_ms"] <= rush_base["p99_ms"] / 10
        figure = (
            f"{ratio:.1f}× the throughput, p99 {rush['p99_ms']:,.0f} ms against the "
            f"baseline's {rush_base['p99_ms']:,.0f} ms"
        )
    else:
        met, figure = None, ""
    found.append(
        {
            "goal": "coupon rush ≥ 5× the baseline's throughput, p99 ≤ 1/10 of the baseline's",
            "met": met,
            "figure": figure,
        }
    )

    health = fs("healthz")
    for scenario in ("coupon-rush", "limited-rush"):
        record = fs(scenario)
        if health is None or record is None or record["cpu_us_per_refused"] is None:
            met, figure = None, ""
        else:
            floor = health["cpu_us_per_request"]
            per = record["cpu_us_per_refused"]
            met = per <= 1.5 * floor
            figure = f"{per:,.0f} µs per refusal, {per / floor:.2f}× /healthz's {floor:,.0f} µs"
        found.append(
            {
                "goal": f"CPU per refused request ({scenario}) ≤ 1.5× /healthz's",
                "met": met,
                "figure": figure,
            }
        )

    if paid is None or paid["cpu_us_per_success"] is None:
        met, figure = None, ""
    else:
        per = paid["cpu_us_per_success"]
        db_included = paid["cpu_db_us"] is not None or not postgres
        met = per <= 700 and db_included
        figure = f"{per:,.0f} µs" + ("" if db_included else " (database CPU not measured)")
    found.append(
        {
            "goal": "CPU ≤ 700 µs per paid order, the database's included",
            "met": met,
            "figure": figure,
        }
    )

    page = fs("product-page")
    if page is None or health is None:
        met, figure = None, ""
    else:
        met = page["rps"] >= health["rps"] / 2
        figure = f"{page['rps']:,.0f} req/s, {page['rps'] / health['rps']:.2f}× /healthz's"
    found.append(
        {
            "goal": "product page during a rush ≥ half the /healthz rate",
            "met": met,
            "figure": figure,
        }
    )
    return found


def markdown_goals(found: Sequence[Mapping[str, Any]]) -> str:
    """The goals as a Markdown list: ``- **met** goal (figure)``."""
    lines = []
    for goal in found:
        verdict = {True: "met", False: "not met", None: "not measured"}[goal["met"]]
        figure = f" ({goal['figure']})" if goal["figure"] else ""
        lines.append(f"- **{verdict}**: {goal['goal']}{figure}")
    return "\n".join(lines)


def render_goals(found: Sequence[Mapping[str, Any]]) -> str:
    """One line per goal: ``met`` / ``NOT MET`` / ``not measured``."""
    lines = []
    for goal in found:
        verdict = {True: "met", False: "NOT MET", None: "not measured"}[goal["met"]]
        figure = f" ({goal['figure']})" if goal["figure"] else ""
        lines.append(f"  {verdict:<12} {goal['goal']}{figure}")
    return "\n".join(lines)
