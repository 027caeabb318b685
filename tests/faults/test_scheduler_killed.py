"""The scheduler killed with SIGKILL and restarted, with cron scripts firing every second."""

import itertools
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from redis import Redis

from tests.conftest import bearer
from tests.services import SINGLE_TENANT_LOAD, SchedulerProcess, eventually
from webapp.extensions import db
from webapp.models import Execution, utcnow

EVERY_SECOND = "* * * * * *"
SOURCE = "async function main(event) { return event.scheduled_at }"
SECOND = timedelta(seconds=1)
DEAD_SECONDS = 3
KILLS = 4


@dataclass(frozen=True)
class Outage:
    """A scheduler killed and started again, as wall-clock times."""

    killed_at: datetime  # right after the SIGKILL
    started_at: datetime  # when the restarted scheduler began (it reports this itself)
    ready_at: datetime  # right after its first heartbeat


def _cron_scripts(client, headers: dict[str, str]) -> dict[str, str]:
    """One every-second script per misfire policy: policy -> script id."""
    ids = {}
    for policy in ("run_once", "skip"):
        body = {"name": policy, "type": "cron", "cron_expression": EVERY_SECOND, "source": SOURCE}
        created = client.post("/api/v1/scripts", json={**body, "misfire_policy": policy}, headers=headers)
        assert created.status_code == 201, created.get_json()
        ids[policy] = created.get_json()["id"]
    return ids


def _rows(app, script_ids) -> list[Execution]:
    with app.app_context():
        rows = db.session.scalars(
            db.select(Execution)
            .where(Execution.script_id.in_([uuid.UUID(sid) for sid in script_ids]))
            .order_by(Execution.scheduled_at)
        ).all()
        db.session.expunge_all()
        return list(rows)


def _fired_after(app, script_ids, moment: datetime, count: int) -> bool:
    rows = _rows(app, script_ids)
    return all(
        sum(1 for e in rows if e.script_id == uuid.UUID(sid) and e.scheduled_at > moment) >= count for sid in script_ids
    )


def _next_second_plus(offset: float) -> None:
    """Let time pass until `offset` seconds after the next whole second."""
    time.sleep(1 - time.time() % 1 + offset)


def _firing_offset(app, script_ids) -> float:
    """How long after its second a fire is being recorded lately: the claim is just made then."""
    recent = _rows(app, script_ids)[-10:]
    return statistics.median((e.queued_at - e.scheduled_at).total_seconds() for e in recent)


def _restart(
    victim: SchedulerProcess, start_scheduler: Callable[[], SchedulerProcess], redis: Redis, pause: float
) -> tuple[SchedulerProcess, Outage]:
    victim.kill()
    killed_at = utcnow()
    time.sleep(pause)  # fire times pass with no scheduler (or only the other one) running
    restarted = start_scheduler()
    ready_at = utcnow()
    started_at = datetime.fromtimestamp(float(redis.hget("sr:scheduler:started", restarted.name)), UTC)
    return restarted, Outage(killed_at, started_at, ready_at)


def _settled(app, script_ids) -> list[Execution]:
    """Every execution, once none is left queued or running."""

    def unfinished() -> list[tuple[datetime, str]]:
        return [(e.scheduled_at, e.status) for e in _rows(app, script_ids) if e.status in ("queued", "running")]

    try:
        eventually(lambda: not unfinished(), 15, "every execution finished")
    except TimeoutError as exc:
        raise AssertionError(f"left unfinished: {unfinished()}") from exc
    return _rows(app, script_ids)


def _assert_each_fire_ran_once(rows: list[Execution]) -> int:
    """No fire recorded twice, and each one ran, unless it came while another run of its
    script was still queued or running (docs/cron.md: then it is recorded `skipped`). Returns how
    many were skipped so."""
    fires = [e.scheduled_at for e in rows]
    assert len(fires) == len(set(fires)), f"a fire ran twice: {fires}"
    ran = [e for e in rows if e.status == "succeeded"]
    skipped = [e for e in rows if e.status == "skipped"]
    assert len(ran) + len(skipped) == len(rows), [(e.scheduled_at, e.status, e.error_message) for e in rows]
    for fire in skipped:
        overlapped = any(other.queued_at <= fire.queued_at < other.finished_at for other in ran)
        assert overlapped, (fire.scheduled_at, fire.queued_at, fire.error_message, fires)
    return len(skipped)


def test_a_killed_scheduler_collapses_its_missed_fires_by_policy(
    app, client, make_user, make_token, start_worker, start_scheduler, redis_url
):
    make_user("ed@acme.io", "acme", "editor")
    scripts = _cron_scripts(client, bearer(make_token("ed@acme.io")))
    redis = Redis.from_url(redis_url)
    start_worker(**SINGLE_TENANT_LOAD)  # both scripts are one tenant's: fairness has its own tests
    start_worker(**SINGLE_TENANT_LOAD)  # both scripts are one tenant's: fairness has its own tests
    scheduler = start_scheduler()
    eventually(lambda: _fired_after(app, scripts.values(), utcnow() - timedelta(days=1), 2), 10, "first fires")
    outages = []
    # Killed at any moment, then while recording a fire, each time down for a few seconds;
    # last, restarted at once, while the killed one's last heartbeat is still fresh in Redis.
    for when, pause in (("any", DEAD_SECONDS), ("firing", DEAD_SECONDS), ("after a fire", 0)):
        if when == "firing":
            _next_second_plus(_firing_offset(app, scripts.values()))
        elif when == "after a fire":
            _next_second_plus(0.5)
        scheduler, outage = _restart(scheduler, start_scheduler, redis, pause)
        outages.append(outage)
        eventually(lambda o=outage: _fired_after(app, scripts.values(), o.ready_at, 3), 10, "the cadence resuming")
    scheduler.stop()
    rows = _settled(app, scripts.values())
    for policy, script_id in scripts.items():
        script_rows = [e for e in rows if e.script_id == uuid.UUID(script_id)]
        skipped = _assert_each_fire_ran_once(script_rows)
        fires = [e.scheduled_at for e in script_rows]
        for outage in outages:
            assert outage.killed_at < outage.started_at <= outage.ready_at
            # Missed: the fire times after the kill and before the restarted scheduler began.
            latest_missed = outage.started_at.replace(microsecond=0)
            caught_up = [t for t in fires if outage.killed_at < t <= outage.started_at]
            expected = [latest_missed] if policy == "run_once" and latest_missed > outage.killed_at else []
            assert caught_up == expected, (policy, outage, fires)
            # The cadence resumes at once: every second from the restart on.
            after = [t for t in fires if outage.started_at - SECOND < t <= outage.ready_at + 3 * SECOND]
            assert after and after[0] - outage.started_at <= SECOND, (policy, outage, fires)
            assert all(b - a == SECOND for a, b in itertools.pairwise(after)), (policy, outage, fires)
        down = ", ".join(f"{(o.started_at - o.killed_at).total_seconds():.1f} s" for o in outages)
        in_windows = [sum(1 for t in fires if o.killed_at < t <= o.started_at) for o in outages]
        print(
            f"\n{policy}: {len(fires)} fires, none doubled, {skipped} skipped (overlap); scheduler down {down}; "
            f"runs for the fires missed meanwhile: {in_windows}"
        )


def test_with_a_second_scheduler_running_no_fire_is_missed(
    app, client, make_user, make_token, start_worker, start_scheduler, redis_url
):
    make_user("ed@acme.io", "acme", "editor")
    scripts = _cron_scripts(client, bearer(make_token("ed@acme.io")))
    redis = Redis.from_url(redis_url)
    start_worker(**SINGLE_TENANT_LOAD)  # both scripts are one tenant's: fairness has its own tests
    start_worker(**SINGLE_TENANT_LOAD)  # both scripts are one tenant's: fairness has its own tests
    schedulers = [start_scheduler(), start_scheduler()]
    eventually(lambda: _fired_after(app, scripts.values(), utcnow() - timedelta(days=1), 2), 10, "first fires")
    started = utcnow()
    # Each kill lands while the fire of that second is being claimed and recorded; the first
    # killed scheduler stays down a while, the others are restarted at once.
    outages = []
    for kill in range(KILLS):
        _next_second_plus(_firing_offset(app, scripts.values()))
        pause = DEAD_SECONDS if kill == 0 else 0
        schedulers[kill % 2], outage = _restart(schedulers[kill % 2], start_scheduler, redis, pause)
        outages.append(outage)
    eventually(lambda: _fired_after(app, scripts.values(), outage.ready_at, 3), 10, "fires after the last restart")
    for scheduler in schedulers:
        scheduler.stop()
    rows = _settled(app, scripts.values())
    for policy, script_id in scripts.items():
        script_rows = [e for e in rows if e.script_id == uuid.UUID(script_id)]
        skipped = _assert_each_fire_ran_once(script_rows)
        fires = [e.scheduled_at for e in script_rows]
        gaps = [(a.time(), b.time()) for a, b in itertools.pairwise(fires) if b - a != SECOND]
        assert not gaps, (policy, gaps, [o.killed_at.time() for o in outages])  # none missed, through every kill
        assert fires[0] < started and fires[-1] > outage.ready_at + 2 * SECOND
        late = [(e.queued_at - e.scheduled_at).total_seconds() for e in script_rows]
        late = [seconds for seconds in late if seconds > 1]
        print(
            f"\n{policy}: {len(fires)} fires, one every second through {KILLS} kills, none doubled or missed; "
            f"{skipped} skipped (overlap); {len(late)} recorded late (taken over from a killed scheduler, "
            f"at most {max(late, default=0):.1f} s after their time)"
        )
