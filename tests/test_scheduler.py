"""The cron scheduler end to end: real scheduler, worker, Redis and database."""

import itertools
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.services import eventually
from webapp.extensions import db
from webapp.models import Execution

QUICK = "async function main(event) { return event.scheduled_at }"


def _cron(client, headers, expression: str, source: str = QUICK, **fields) -> dict:
    body = {
        "name": fields.pop("name", "tick"),
        "type": "cron",
        "cron_expression": expression,
        "source": source,
        **fields,
    }
    response = client.post("/api/v1/scripts", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _executions(app, script_id: str) -> list[Execution]:
    import uuid

    with app.app_context():
        rows = db.session.scalars(
            db.select(Execution).where(Execution.script_id == uuid.UUID(script_id)).order_by(Execution.scheduled_at)
        ).all()
        db.session.expunge_all()
        return list(rows)


def test_every_second_script_runs_several_times(app, client, editor, start_worker, start_scheduler):
    start_worker()
    start_scheduler()
    script = _cron(client, editor, "*/1 * * * * *")
    done = eventually(lambda: [e for e in _executions(app, script["id"]) if e.status == "succeeded"][3:], 15)
    assert done, _executions(app, script["id"])
    runs = [e for e in _executions(app, script["id"]) if e.status == "succeeded"]
    times = [e.scheduled_at for e in runs]
    assert all(t.microsecond == 0 for t in times) and len(set(times)) == len(times)
    assert all(later - earlier == timedelta(seconds=1) for earlier, later in itertools.pairwise(times))
    first = runs[0]
    assert first.trigger == "cron" and first.params["type"] == "cron"
    assert first.params["scheduled_at"] == first.scheduled_at.isoformat()
    assert first.result == first.scheduled_at.isoformat()  # the event reached main
    assert first.started_at - first.scheduled_at < timedelta(seconds=1)


def test_a_changed_schedule_is_followed_from_the_next_fire(app, client, editor, start_worker, start_scheduler):
    start_worker()
    start_scheduler()
    script = _cron(client, editor, "*/1 * * * * *")
    eventually(lambda: len(_executions(app, script["id"])) >= 2, 15)
    client.patch(f"/api/v1/scripts/{script['id']}", json={"cron_expression": "*/2 * * * * *"}, headers=editor)
    changed_at = datetime.now().astimezone()
    eventually(lambda: len([e for e in _executions(app, script["id"]) if e.script_version == 2]) >= 3, 10)
    after = [e for e in _executions(app, script["id"]) if e.scheduled_at > changed_at + timedelta(seconds=1)]
    assert len(after) >= 2
    assert all(e.script_version == 2 and e.scheduled_at.second % 2 == 0 for e in after), after
    ran_old = [e for e in _executions(app, script["id"]) if e.script_version == 1 and e.status == "succeeded"]
    assert all(e.started_at < changed_at + timedelta(seconds=1) for e in ran_old)


@pytest.mark.parametrize("how", ["disable", "delete"])
def test_no_run_starts_after_disable_or_delete_returns(how, app, client, editor, start_worker, start_scheduler):
    start_worker()
    start_scheduler()
    script = _cron(client, editor, "*/1 * * * * *")
    eventually(lambda: len(_executions(app, script["id"])) >= 2, 15)
    if how == "disable":
        assert (
            client.patch(f"/api/v1/scripts/{script['id']}", json={"status": "disabled"}, headers=editor).status_code
            == 200
        )
    else:
        assert client.delete(f"/api/v1/scripts/{script['id']}", headers=editor).status_code == 204
    stopped_at = datetime.now().astimezone()
    time.sleep(3)  # three fire times pass: none may start
    # A fire queued before the change may be taken after it: it ends `skipped`, its script unrun.
    ran = [e for e in _executions(app, script["id"]) if e.status != "skipped"]
    started_after = [e for e in ran if e.started_at and e.started_at > stopped_at]
    assert started_after == []
    if how == "delete":
        assert _executions(app, script["id"]) == []


@pytest.mark.parametrize("policy", ["run_once", "skip"])
def test_fires_missed_while_no_scheduler_ran_collapse_by_policy(
    policy, app, client, editor, start_worker, start_scheduler, redis_url
):
    from redis import Redis

    start_worker()
    scheduler = start_scheduler()
    script = _cron(client, editor, "*/1 * * * * *", misfire_policy=policy)
    eventually(lambda: len(_executions(app, script["id"])) >= 2, 15)
    scheduler.stop()
    last_before = max(e.scheduled_at for e in _executions(app, script["id"]))
    time.sleep(4)  # about four fire times are missed
    restarted = start_scheduler()
    started = datetime.fromtimestamp(float(Redis.from_url(redis_url).hget("sr:scheduler:started", restarted.name)), UTC)
    eventually(lambda: any(e.scheduled_at > started + timedelta(seconds=2) for e in _executions(app, script["id"])), 15)
    fires = [e.scheduled_at for e in _executions(app, script["id"])]
    missed = [t for t in fires if last_before < t <= started]
    if policy == "run_once":
        assert missed == [started.replace(microsecond=0)], fires  # one run, for the latest missed fire
    else:
        assert missed == [], fires
    cadence = [t for t in fires if t > started]
    assert len(cadence) >= 2 and all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(cadence))
    assert cadence[0] - started <= timedelta(seconds=1)  # the normal cadence resumes at once


def test_two_schedulers_run_each_fire_exactly_once(app, client, editor, start_worker, start_scheduler):
    start_worker()
    start_worker()
    start_scheduler()
    start_scheduler()
    scripts = [_cron(client, editor, "*/1 * * * * *", name=f"tick-{i}") for i in range(3)]
    eventually(lambda: all(len(_executions(app, s["id"])) >= 8 for s in scripts), 20, "8 fires of each script")
    for script in scripts:
        fires = [e.scheduled_at for e in _executions(app, script["id"])]
        assert len(fires) >= 8, fires
        assert len(fires) == len(set(fires))  # never twice
        gaps = {b - a for a, b in itertools.pairwise(fires)}
        assert gaps == {timedelta(seconds=1)}, fires  # never missed


def test_a_fire_while_the_previous_run_is_going_is_skipped(app, client, editor, start_worker, start_scheduler):
    start_worker()
    start_scheduler()
    slow = "function main() { const t = Date.now(); while (Date.now() - t < 3000) {} return 'done' }"
    script = _cron(client, editor, "*/1 * * * * *", source=slow)
    eventually(lambda: any(e.status == "succeeded" for e in _executions(app, script["id"])), 10)
    rows = _executions(app, script["id"])
    skipped = [e for e in rows if e.status == "skipped"]
    assert len(skipped) >= 2, rows
    assert skipped[0].error_message == "skipped: the previous run of this script was still in progress"
    assert skipped[0].started_at is None and skipped[0].finished_at is not None


def test_schedule_health_is_visible(app, client, make_user, login, start_worker, start_scheduler):
    """List and script page show next and last fire; the dashboard shows whether cron is firing."""
    make_user("ed@acme.io", "acme", "editor")
    csrf = login("ed@acme.io")
    idle = client.get("/").get_data(as_text=True)
    assert "not running" in idle and "cron scripts are not firing" in idle and "0 running" in idle
    start_worker()
    scheduler = start_scheduler()
    created = client.post(
        "/api/v1/scripts",
        json={"name": "tick", "type": "cron", "cron_expression": "*/1 * * * * *", "source": QUICK},
        headers={"X-CSRFToken": csrf},
    ).get_json()
    eventually(lambda: any(e.status == "succeeded" for e in _executions(app, created["id"])), 15)
    listing = client.get("/scripts").get_data(as_text=True)
    assert "next <time" in listing and "last <a" in listing and 'class="badge succeeded">succeeded' in listing
    page = client.get(f"/scripts/{created['id']}").get_data(as_text=True)
    assert 'Next fire</dt><dd id="next-fire">' in page and "never fired yet" not in page
    assert "Last fire" in page and "badge succeeded" in page
    healthy = client.get("/").get_data(as_text=True)
    assert 'badge succeeded">running</span> 1 process' in healthy and "on time" in healthy
    scheduler.kill()
    from redis import Redis

    Redis.from_url(app.config["SETTINGS"].redis_url).hset("sr:scheduler:heartbeat", scheduler.name, time.time() - 60)

    def alarm() -> bool:
        page = client.get("/").get_data(as_text=True)
        return "cron scripts are not firing" in page and "the oldest due fire is" in page

    eventually(alarm, 5, "the alarm naming the oldest due fire")


def test_a_second_scheduler_starting_does_not_treat_due_fires_as_missed(
    app, client, editor, start_worker, start_scheduler
):
    start_worker()
    start_scheduler()
    script = _cron(client, editor, "*/1 * * * * *", misfire_policy="skip")
    eventually(lambda: len(_executions(app, script["id"])) >= 2, 15)
    joined = len(_executions(app, script["id"]))
    start_scheduler()  # joins while the first one is firing
    eventually(lambda: len(_executions(app, script["id"])) >= joined + 4, 10, "4 fires after the second one joined")
    fires = [e.scheduled_at for e in _executions(app, script["id"])]
    gaps = {b - a for a, b in itertools.pairwise(fires)}
    assert gaps == {timedelta(seconds=1)}, fires  # no fire skipped as "missed"


def test_a_fire_whose_recording_fails_is_tried_again(app, client, editor, monkeypatch, redis_url):
    """If the database refuses a tick's fires, they are not lost: the next tick records them."""

    import worker.scheduler as scheduler_module

    scheduler, script = _scheduler_with_a_due_fire(app, redis_url, lambda: _cron(client, editor, "*/1 * * * * *"))
    real = scheduler_module.record_fires

    def broken(fires):
        raise RuntimeError("database is down")

    monkeypatch.setattr(scheduler_module, "record_fires", broken)
    with app.app_context(), pytest.raises(RuntimeError):
        scheduler.fire_due()
    monkeypatch.setattr(scheduler_module, "record_fires", real)
    with app.app_context():
        assert scheduler.fire_due() >= 1
    assert len(_executions(app, script["id"])) >= 1


@pytest.mark.slow  # drives a scheduler for seconds
def test_a_tick_the_database_refused_loses_no_fire_even_under_skip(app, client, editor, monkeypatch, redis_url):
    """One failed pass is an outage of its own length: the fires it put back run on the next
    pass, late, and only fires that fell due while cut off count as missed."""
    from sqlalchemy.exc import OperationalError

    import worker.scheduler as scheduler_module

    scheduler, script = _scheduler_with_a_due_fire(
        app, redis_url, lambda: _cron(client, editor, "*/1 * * * * *", misfire_policy="skip")
    )
    put_back = datetime.fromtimestamp(scheduler.registry.earliest_due_ms() / 1000, UTC)
    real = scheduler_module.record_fires

    def refused(fires):
        raise OperationalError("INSERT INTO executions", {}, Exception("database is down"))

    monkeypatch.setattr(scheduler_module, "record_fires", refused)
    scheduler.tick()
    monkeypatch.setattr(scheduler_module, "record_fires", real)
    time.sleep(1.2)  # the outage lasts past the next fire time: that one is missed (skip)
    until = time.time() + 2.5
    while time.time() < until:  # the scheduler's own loop, for a few fires
        time.sleep(min(scheduler.tick(), max(until - time.time(), 0)))
    fires = [e.scheduled_at for e in _executions(app, script["id"])]
    assert fires[0] == put_back, fires  # put back by the refused pass: run, late
    assert put_back + timedelta(seconds=1) not in fires, fires  # due while cut off: skipped
    assert len(fires) >= 2, fires  # then the cadence goes on


def test_a_fire_recorded_but_not_queued_is_queued_by_the_next_pass(app, client, editor, monkeypatch, redis_url):
    """Redis failed between the fire's record and its queueing: the next pass queues it (it
    would otherwise wait a minute for the reaper, and the script's fires be skipped)."""
    from redis import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError
    from rq import Queue

    import worker.scheduler as scheduler_module

    scheduler, script = _scheduler_with_a_due_fire(app, redis_url, lambda: _cron(client, editor, "*/1 * * * * *"))
    real = scheduler_module.queue_runs

    def redis_gone(runs, redis=None):
        raise RedisConnectionError("Redis went away")

    monkeypatch.setattr(scheduler_module, "queue_runs", redis_gone)
    scheduler.tick()
    [stranded] = _executions(app, script["id"])
    assert stranded.status == "queued"
    monkeypatch.setattr(scheduler_module, "queue_runs", real)
    scheduler.tick()
    assert str(stranded.id) in " ".join(Queue("default", connection=Redis.from_url(redis_url)).job_ids)
    same_fire = [e for e in _executions(app, script["id"]) if e.scheduled_at == stranded.scheduled_at]
    assert [e.id for e in same_fire] == [stranded.id]  # not recorded twice


def _scheduler_with_a_due_fire(app, redis_url: str, make_script):
    """A scheduler driven by the test (no process of its own), once a fire of the script it
    makes is due. It starts before the script exists, as in production: one started after
    the script's first fire time would rightly count that fire as missed before its start."""
    from redis import Redis

    from worker.scheduler import ScriptScheduler

    scheduler = ScriptScheduler(Redis.from_url(redis_url), app)
    script = make_script()
    with app.app_context():
        scheduler.registry.reconcile()
    eventually(lambda: scheduler.registry.earliest_due_ms() <= time.time() * 1000, 3, step=0.02)
    return scheduler, script
