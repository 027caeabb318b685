"""Script metrics, aggregated in Redis so that every process and host counts into one place.

Workers and schedulers write (one pipeline per run or tick); whichever web process is scraped
reads them back as Prometheus families at `GET /metrics`. Scripts' fetch calls are counted
with their run (`RunCounts.add`), by outcome only: never per script or per host. A process
that dies or restarts takes nothing with it. Gauges that describe "now" are read at scrape
time: active scripts from the database, busy runtimes from short-lived keys, queues and
workers from RQ.
The same scrape carries the web app's HTTP metrics (webapp/http_metrics.py).

A deleted script's series go at the next scrape: the scrape drops (and deletes from Redis) the
series of every script id the database no longer has. Deleting them when the script is
deleted would not do: a run in flight then, or an endpoint call's batched counts, write them
again a moment later.
"""

import hmac
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, request
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry
from redis import Redis
from redis.client import Pipeline
from rq import Queue, Worker
from sqlalchemy import func, select

from webapp import http_metrics
from webapp.cron_registry import CronRegistry
from webapp.extensions import db
from webapp.models import Script
from webapp.redis_client import get_redis
from worker.fetch import errors as fetch_errors

PREFIX = "sr:metrics:"
EXECUTIONS = PREFIX + "executions"  # hash "script_id|type|status" -> count
# hash "script_id|type|bound" -> runs whose duration fell in (previous bound, bound];
# "…|sum" -> seconds, "…|count" -> runs
DURATION = PREFIX + "duration-buckets"  # not "duration": that key held cumulative counts before
ERRORS = PREFIX + "errors"  # hash error_kind -> count
EVENTS = PREFIX + "events"  # hash name -> count (cache hits/misses, recycles, cron fires/skips)
# hash "outcome|bound" / "outcome|sum" / "outcome|count", as DURATION: scripts' fetch calls
# (worker/fetch). The counter script_fetch_requests_total is read from the count fields.
FETCH_DURATION = PREFIX + "fetch-duration-buckets"
BUSY = PREFIX + "busy:"  # one key per worker while it runs a script, with a TTL
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
FETCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A fetch call's outcome label: "answered" (any HTTP status; the status stays in the
# execution's http_calls, out of the labels) or the error kind it failed with.
FETCH_OUTCOMES = ("answered", *fetch_errors.KINDS)
BUSY_TTL_SECONDS = 120


class RunCounts:
    """Finished runs counted in memory, then written in one go: one HINCRBY per field however
    many runs it counts (a worker answering hundreds of endpoint calls a second writes a few
    commands per batch, not five per call)."""

    def __init__(self) -> None:
        self.ints: Counter[tuple[str, str]] = Counter()
        self.sums: Counter[tuple[str, str]] = Counter()

    def add(
        self,
        script_id: str,
        script_type: str,
        status: str,
        seconds: float | None,
        error_kind: str | None,
        cache_hit: bool | None,
        recycled: int = 0,
        http_calls: list[dict[str, Any]] | None = None,
    ) -> None:
        """One run (status: succeeded | failed | skipped) and its fetch calls (their summaries,
        worker/fetch/client.py `summary`)."""
        if status != "skipped":
            outcome = "success" if status == "succeeded" else "failed"
            self.ints[EXECUTIONS, f"{script_id}|{script_type}|{outcome}"] += 1
        if seconds is not None:
            self._observe(DURATION, BUCKETS, f"{script_id}|{script_type}", seconds)
        if error_kind:
            self.ints[ERRORS, error_kind] += 1
        if cache_hit is not None:
            self.ints[EVENTS, "compile_cache_hits" if cache_hit else "compile_cache_misses"] += 1
        if recycled:
            self.ints[EVENTS, "runtime_recycles"] += recycled
        for call in http_calls or ():
            self._observe(FETCH_DURATION, FETCH_BUCKETS, call.get("error") or "answered", call["duration_ms"] / 1000)

    def event(self, name: str, amount: int = 1) -> None:
        """An event counter (`count_event`'s)."""
        self.ints[EVENTS, name] += amount

    def _observe(self, key: str, buckets: tuple[float, ...], labels: str, seconds: float) -> None:
        """One value into the histogram hash `key`: only the smallest bucket that holds it is
        counted; the scrape adds them up (cumulative)."""
        bound = next((b for b in buckets if seconds <= b), None)
        if bound is not None:
            self.ints[key, f"{labels}|{bound}"] += 1
        self.sums[key, f"{labels}|sum"] += seconds
        self.ints[key, f"{labels}|count"] += 1

    def write(self, pipe: Pipeline) -> None:
        for (key, field), amount in self.ints.items():
            pipe.hincrby(key, field, amount)
        for (key, field), amount in self.sums.items():
            pipe.hincrbyfloat(key, field, amount)

    def __bool__(self) -> bool:
        return bool(self.ints or self.sums)


def record_run(
    redis: Redis,
    script_id: str,
    script_type: str,
    status: str,
    seconds: float | None,
    error_kind: str | None,
    cache_hit: bool | None,
    recycled: int = 0,
    http_calls: list[dict[str, Any]] | None = None,
) -> None:
    """Count one finished run at once."""
    counts = RunCounts()
    counts.add(script_id, script_type, status, seconds, error_kind, cache_hit, recycled, http_calls)
    pipe = redis.pipeline(transaction=False)
    counts.write(pipe)
    pipe.execute()


def count_event(redis: Redis, name: str, amount: int = 1) -> None:
    redis.hincrby(EVENTS, name, amount)


def mark_busy(redis: Redis, worker: str, runs: int) -> None:
    """The number of runs a worker has in flight (none: its key goes)."""
    if runs:
        redis.set(BUSY + worker, str(runs), ex=BUSY_TTL_SECONDS)
    else:
        redis.delete(BUSY + worker)


class ScriptMetrics(Collector):
    """Reads the aggregated metrics at scrape time."""

    def __init__(self, redis: Redis):
        self.redis = redis

    def collect(self) -> Iterator:
        executions = CounterMetricFamily(
            "script_executions", "Script runs by script, type and outcome.", labels=["script_id", "type", "status"]
        )
        executions_series, duration_series = self._series_of_existing_scripts()
        for field, value in executions_series:
            script_id, script_type, status = field.split("|")
            executions.add_metric([script_id, script_type, status], float(value))
        yield executions
        durations = HistogramMetricFamily(
            "script_execution_duration_seconds", "Run duration by script and type.", labels=["script_id", "type"]
        )
        yield _histogram(durations, duration_series, BUCKETS)
        yield from self._fetches()
        errors = CounterMetricFamily("script_errors", "Failed runs by error kind.", labels=["error_kind"])
        for kind, value in self._hash(ERRORS):
            errors.add_metric([kind], float(value))
        yield errors
        events = dict(self._hash(EVENTS))
        for name, help_text in (
            ("compile_cache_hits", "Runs whose compiled script came from a runtime's cache."),
            ("compile_cache_misses", "Runs that compiled their script."),
            ("runtime_recycles", "QuickJS runtimes replaced (run count, limit hit or heap size)."),
            ("cron_fires", "Cron fires recorded by schedulers."),
            ("cron_skips", "Cron fires skipped (previous run still going, or script changed or disabled)."),
        ):
            yield CounterMetricFamily(f"script_{name}", help_text, value=float(events.get(name, 0)))
        active = GaugeMetricFamily("active_scripts_gauge", "Active scripts of all tenants, by type.", labels=["type"])
        counts = dict(
            db.session.execute(
                select(Script.type, func.count()).where(Script.status == "active").group_by(Script.type)
            ).all()
        )
        for script_type in ("manual", "cron", "endpoint"):
            active.add_metric([script_type], float(counts.get(script_type, 0)))
        yield active
        keys = list(self.redis.scan_iter(match=BUSY + "*", count=1000))
        busy = sum(int(value) for value in self.redis.mget(keys) if value) if keys else 0
        yield GaugeMetricFamily("active_vms_gauge", "Runs in flight in QuickJS runtimes now, all workers.", value=busy)
        depth = GaugeMetricFamily("script_queue_depth", "Runs waiting in each queue.", labels=["queue"])
        for name in ("endpoints", "default"):
            depth.add_metric([name], float(Queue(name, connection=self.redis).count))
        yield depth
        yield GaugeMetricFamily("script_workers", "Worker processes alive.", value=Worker.count(connection=self.redis))
        health = CronRegistry(self.redis).health()
        yield GaugeMetricFamily("script_schedulers", "Scheduler processes alive.", value=health["schedulers"])
        yield GaugeMetricFamily(
            "script_scheduler_lag_seconds", "How late the oldest due cron fire is.", value=health["lag_seconds"] or 0.0
        )

    def _hash(self, key: str) -> list[tuple[str, str]]:
        return [(k.decode(), v.decode()) for k, v in self.redis.hgetall(key).items()]

    def _series_of_existing_scripts(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """The per-script hashes' fields (EXECUTIONS, DURATION), less those of scripts that no
        longer exist, which are deleted from Redis."""
        hashes = {key: self._hash(key) for key in (EXECUTIONS, DURATION)}
        ids = {_script_id(field) for fields in hashes.values() for field, _ in fields}
        gone = ids - _existing_script_ids(ids)
        if gone:
            pipe = self.redis.pipeline(transaction=False)
            for key, fields in hashes.items():
                stale = [field for field, _ in fields if _script_id(field) in gone]
                if stale:
                    pipe.hdel(key, *stale)
            pipe.execute()
        executions, durations = (
            [(field, value) for field, value in hashes[key] if _script_id(field) not in gone]
            for key in (EXECUTIONS, DURATION)
        )
        return executions, durations

    def _fetches(self) -> Iterator:
        fields = self._hash(FETCH_DURATION)
        calls = CounterMetricFamily(
            "script_fetch_requests",
            "Scripts' fetch calls by outcome (answered, or the error kind).",
            labels=["outcome"],
        )
        counted = {field.partition("|")[0]: float(value) for field, value in fields if field.endswith("|count")}
        for outcome in sorted({*FETCH_OUTCOMES, *counted}):  # every known outcome from 0, so rate() sees the first
            calls.add_metric([outcome], counted.get(outcome, 0.0))
        yield calls
        durations = HistogramMetricFamily(
            "script_fetch_duration_seconds", "Scripts' fetch call duration by outcome.", labels=["outcome"]
        )
        yield _histogram(durations, fields, FETCH_BUCKETS)


def _histogram(
    family: HistogramMetricFamily, fields: list[tuple[str, str]], buckets: tuple[float, ...]
) -> HistogramMetricFamily:
    """`family` with the series of a histogram hash (fields "label|…|bound", "…|sum", "…|count")."""
    series: dict[tuple[str, ...], dict[str, float]] = {}
    for field, value in fields:
        *labels, part = field.split("|")
        series.setdefault(tuple(labels), {})[part] = float(value)
    for labels, parts in sorted(series.items()):
        cumulative, running = [], 0.0
        for bound in buckets:
            running += parts.get(str(bound), 0.0)
            cumulative.append((str(bound), running))
        cumulative.append(("+Inf", parts.get("count", 0.0)))
        family.add_metric(list(labels), cumulative, parts.get("sum", 0.0))
    return family


def _script_id(field: str) -> str:
    return field.partition("|")[0]


ID_BATCH = 500  # ids per query: well under any database's limit on bound parameters


def _existing_script_ids(ids: set[str]) -> set[str]:
    wanted = []
    for text in ids:
        try:
            wanted.append(uuid.UUID(text))
        except ValueError:
            continue  # not a script's id: nothing to keep it for
    found: set[str] = set()
    for start in range(0, len(wanted), ID_BATCH):
        batch = wanted[start : start + ID_BATCH]
        found.update(str(script_id) for script_id in db.session.scalars(select(Script.id).where(Script.id.in_(batch))))
    return found


bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    token = current_app.config["SETTINGS"].metrics_token
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return Response("METRICS_TOKEN required as a Bearer token\n", 401, {"WWW-Authenticate": "Bearer"})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScriptMetrics(get_redis()))
    registry.register(http_metrics.collector(current_app))
    return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4; charset=utf-8")
