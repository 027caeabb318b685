"""The numbers behind the dashboard: one tenant's executions over a recent window.

Every query is limited to one tenant and runs the same on SQLite and PostgreSQL. Runs are
placed in time by `queued_at` (when they were asked for); durations are those of finished
runs (succeeded or failed).
"""

import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Integer, case, func, literal_column, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import selectinload
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from webapp.extensions import db
from webapp.models import Execution, Script

FINISHED = ("succeeded", "failed")
# The stacked series of the runs chart; queued and running runs are drawn as "pending".
SERIES = ("succeeded", "failed", "skipped", "pending")


@dataclass(frozen=True)
class Window:
    """The last `count` periods of `seconds` each, the last one the period holding `now`."""

    key: str
    label: str
    seconds: int
    count: int

    @property
    def period_label(self) -> str:
        return "minute" if self.seconds == 60 else f"{self.seconds // 60} minutes"

    def start(self, now: datetime) -> datetime:
        current = math.floor(now.timestamp() / self.seconds) * self.seconds
        return datetime.fromtimestamp(current - (self.count - 1) * self.seconds, UTC)


WINDOWS = {
    w.key: w
    for w in (
        Window("1h", "last hour", 60, 60),
        Window("6h", "last 6 hours", 300, 72),
        Window("24h", "last 24 hours", 900, 96),
    )
}
DEFAULT_WINDOW = "1h"


@dataclass(frozen=True)
class Period:
    start: datetime
    counts: dict[str, int]  # by SERIES name

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class ScriptStat:
    script_id: uuid.UUID
    name: str
    runs: int
    failed: int = 0
    avg_ms: float = 0.0
    max_ms: float = 0.0

    @property
    def failure_rate(self) -> float:
        return self.failed / self.runs if self.runs else 0.0


@dataclass(frozen=True)
class Overview:
    window: Window
    periods: list[Period]
    totals: dict[str, int]
    p50_ms: float | None
    p95_ms: float | None
    slowest: list[ScriptStat] = field(default_factory=list)
    failing: list[ScriptStat] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return sum(self.totals.values())

    @property
    def failure_rate(self) -> float | None:
        finished = self.totals["succeeded"] + self.totals["failed"]
        return self.totals["failed"] / finished if finished else None


class EpochPeriod(FunctionElement):
    """Whole periods of N seconds since the Unix epoch of a UTC datetime column (an integer).

    N is rendered into the SQL, never bound, so that GROUP BY repeats the SELECT expression
    exactly (PostgreSQL compares them as written).
    """

    type = Integer()
    inherit_cache = True


@compiles(EpochPeriod, "sqlite")
def _epoch_period_sqlite(element: EpochPeriod, compiler: SQLCompiler, **kw: Any) -> str:
    column, seconds = (compiler.process(c, **kw) for c in element.clauses)
    return f"(CAST(strftime('%s', {column}) AS INTEGER) / {seconds})"


@compiles(EpochPeriod, "postgresql")
def _epoch_period_postgresql(element: EpochPeriod, compiler: SQLCompiler, **kw: Any) -> str:
    column, seconds = (compiler.process(c, **kw) for c in element.clauses)
    return f"(CAST(FLOOR(EXTRACT(EPOCH FROM {column})) AS BIGINT) / {seconds})"


def _series(status: str) -> str:
    return "pending" if status in ("queued", "running") else status


def periods(tenant_id: int, window: Window, now: datetime) -> list[Period]:
    """Runs per period of the window, by series; periods without runs are zeros."""
    start = window.start(now)
    period = EpochPeriod(Execution.queued_at, literal_column(str(int(window.seconds))))
    rows = db.session.execute(
        select(period, Execution.status, func.count())
        .where(Execution.tenant_id == tenant_id, Execution.queued_at >= start)
        .group_by(period, Execution.status)
    ).all()
    first = int(start.timestamp()) // window.seconds
    counts = [dict.fromkeys(SERIES, 0) for _ in range(window.count)]
    for number, status, count in rows:
        index = int(number) - first
        if 0 <= index < window.count:  # a clock a little ahead elsewhere: not drawn
            counts[index][_series(status)] += count
    return [Period(start + timedelta(seconds=i * window.seconds), c) for i, c in enumerate(counts)]


def percentiles(tenant_id: int, since: datetime, wanted: tuple[int, ...] = (50, 95)) -> list[float | None]:
    """Nearest-rank percentiles (given in percent) of finished runs' durations (ms) since `since`."""
    finished = select(Execution.duration_ms).where(
        Execution.tenant_id == tenant_id,
        Execution.queued_at >= since,
        Execution.status.in_(FINISHED),
        Execution.duration_ms.is_not(None),
    )
    n = db.session.scalar(select(func.count()).select_from(finished.subquery())) or 0
    if not n:
        return [None for _ in wanted]
    ordered = finished.order_by(Execution.duration_ms)
    ranks = [max(-(-pct * n // 100), 1) for pct in wanted]  # ceil(pct% of n), in integers
    return [db.session.scalar(ordered.offset(rank - 1).limit(1)) for rank in ranks]


def slowest(tenant_id: int, since: datetime, limit: int = 5) -> list[ScriptStat]:
    """Scripts by average duration of their finished runs since `since`, slowest first."""
    avg = func.avg(Execution.duration_ms)
    rows = db.session.execute(
        select(Script.id, Script.name, func.count(), avg, func.max(Execution.duration_ms))
        .join(Script, Script.id == Execution.script_id)
        .where(
            Execution.tenant_id == tenant_id,
            Execution.queued_at >= since,
            Execution.status.in_(FINISHED),
            Execution.duration_ms.is_not(None),
        )
        .group_by(Script.id, Script.name)
        .order_by(avg.desc(), Script.name)
        .limit(limit)
    ).all()
    return [ScriptStat(sid, name, runs, avg_ms=float(a), max_ms=float(m)) for sid, name, runs, a, m in rows]


def most_failing(tenant_id: int, since: datetime, limit: int = 5) -> list[ScriptStat]:
    """Scripts with failed runs since `since`, most failures first."""
    failed = func.sum(case((Execution.status == "failed", 1), else_=0))
    rows = db.session.execute(
        select(Script.id, Script.name, func.count(), failed)
        .join(Script, Script.id == Execution.script_id)
        .where(Execution.tenant_id == tenant_id, Execution.queued_at >= since, Execution.status.in_(FINISHED))
        .group_by(Script.id, Script.name)
        .having(failed > 0)
        .order_by(failed.desc(), Script.name)
        .limit(limit)
    ).all()
    return [ScriptStat(sid, name, runs, failed=int(f)) for sid, name, runs, f in rows]


def recent_failures(tenant_id: int, limit: int = 10) -> list[Execution]:
    return list(
        db.session.scalars(
            select(Execution)
            .options(selectinload(Execution.script))
            .where(Execution.tenant_id == tenant_id, Execution.status == "failed")
            .order_by(Execution.queued_at.desc())
            .limit(limit)
        )
    )


def overview(tenant_id: int, window: Window, now: datetime) -> Overview:
    runs = periods(tenant_id, window, now)
    since = runs[0].start
    p50, p95 = percentiles(tenant_id, since)
    totals = {name: sum(p.counts[name] for p in runs) for name in SERIES}
    return Overview(
        window=window,
        periods=runs,
        totals=totals,
        p50_ms=p50,
        p95_ms=p95,
        slowest=slowest(tenant_id, since),
        failing=most_failing(tenant_id, since),
    )
