"""The scheduler's work per pass does not grow with the number of schedules.

Counted, not timed: the SQL statements and Redis round trips of a pass that fires, of an
idle pass, of a reconcile and of the reaper's look at queued runs, with 10 and then 1,000
active cron scripts. A pass firing 1,000 scripts makes as many statements and round trips as
one firing 10 (its commands grow with the fires, in batches); reconciling 1,000 costs what
reconciling 10 does. bench/cron.py measures the CPU share this buys (docs/benchmarks.md).
"""

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from redis import Redis
from redis.connection import AbstractConnection
from sqlalchemy import event, func, select, update

import worker.scheduler as scheduler_module
from webapp.executions import maintenance
from webapp.executions.maintenance import reap_lost
from webapp.extensions import db
from webapp.models import Execution, Script, ScriptVersion, Tenant, utcnow
from worker.scheduler import ScriptScheduler

DAILY = "0 0 * * *"  # the test moves the clock to the fire time: nothing else falls due meanwhile


def _add_cron_scripts(app, count: int) -> None:
    """`count` more active daily cron scripts, inserted in bulk (the API would take minutes)."""
    with app.app_context():
        tenant = db.session.scalar(select(Tenant)) or Tenant(name="acme")
        db.session.add(tenant)
        db.session.flush()
        now, scripts, versions = utcnow(), [], []
        for _ in range(count):
            script_id = uuid.uuid4()
            common = {
                "type": "cron",
                "source": "function main() {}",
                "cron_expression": DAILY,
                "timezone": "UTC",
                "misfire_policy": "run_once",
            }
            scripts.append(
                {"id": script_id, "tenant_id": tenant.id, "name": f"s-{script_id}", "status": "active", **common}
            )
            versions.append({"script_id": script_id, "version": 1, "created_at": now, **common})
        db.session.execute(db.insert(Script), scripts)
        db.session.execute(db.insert(ScriptVersion), versions)
        db.session.commit()


class Costs:
    """SQL statements and Redis round trips (a pipeline is one) made in this process."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, engine) -> None:
        self.counts: Counter[str] = Counter()
        send = AbstractConnection.send_packed_command

        def counted(connection, command, check_health=True):
            if check_health:  # not the client's own health-check PING
                self.counts["redis"] += 1
            return send(connection, command, check_health)

        monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
        event.listen(engine, "before_cursor_execute", self._statement)
        self.engine = engine

    def _statement(self, *args) -> None:
        self.counts["sql"] += 1

    @contextmanager
    def of(self) -> Iterator[Counter[str]]:
        before = Counter(self.counts)
        measured: Counter[str] = Counter()
        yield measured
        measured.update({k: self.counts[k] - before[k] for k in ("sql", "redis")})

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._statement)


@pytest.fixture
def costs(app, monkeypatch) -> Iterator[Costs]:
    with app.app_context():
        engine = db.engine
    counter = Costs(monkeypatch, engine)
    yield counter
    counter.close()


def _fires(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Execution).where(Execution.trigger == "cron"))


def test_a_pass_costs_the_same_statements_and_round_trips_for_10_or_1000_schedules(
    app, redis_url, costs, monkeypatch
) -> None:
    clock = {"now": utcnow()}
    monkeypatch.setattr(scheduler_module, "utcnow", lambda: clock["now"])
    monkeypatch.setattr(maintenance, "utcnow", lambda: clock["now"] + timedelta(minutes=2))  # runs look stale
    monkeypatch.setattr(scheduler_module, "RECONCILE_SECONDS", 10**9)  # measured apart, not within a tick
    redis = Redis.from_url(redis_url)
    scheduler = ScriptScheduler(redis, app)
    midnight = datetime.combine(clock["now"].date(), datetime.min.time(), UTC)
    days = iter(range(1, 100))
    measured: dict[int, dict[str, Counter[str]]] = {}
    for total in (10, 1000):
        _add_cron_scripts(app, total - _count(app, Script))
        with app.app_context():
            scheduler.registry.reconcile()  # schedules the new scripts: work for each
            db.session.remove()
        per_pass = measured[total] = {}
        for warm_up in (True, False):  # a first pass loads Lua scripts, caches the Redis version
            _finish_runs(app)  # as workers would: the next fires are queued, not skipped
            clock["now"] = midnight + timedelta(days=next(days), seconds=0.5)  # every script's time has come
            _measure(app, costs, per_pass, "firing", scheduler.fire_due)
            assert _count(app, Execution, Execution.status == "queued") == total  # all fired, in one pass
            _measure(app, costs, per_pass, "idle", scheduler.fire_due)  # nothing due until midnight
            _measure(app, costs, per_pass, "idle tick", scheduler.tick)
            _measure(app, costs, per_pass, "reconcile", scheduler.registry.reconcile)  # all in place
            _measure(app, costs, per_pass, "reaping", lambda: reap_lost(redis))  # each run's job is there
            assert _count(app, Execution, Execution.status == "queued") == total  # none reaped
            if warm_up:
                per_pass.clear()
    assert measured[1000] == measured[10], measured
    assert measured[1000]["idle"]["sql"] == measured[1000]["idle tick"]["sql"] == 0, measured


def _finish_runs(app) -> None:
    with app.app_context():
        db.session.execute(update(Execution).where(Execution.status == "queued").values(status="succeeded"))
        db.session.commit()


def _count(app, model, *where) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model).where(*where))


def _measure(app, costs: Costs, per_pass: dict[str, Counter[str]], name: str, action: Callable[[], object]) -> None:
    with app.app_context():
        with costs.of() as per_pass[name]:
            action()
        db.session.remove()
