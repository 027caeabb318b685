"""Background upkeep: retention of executions, runs whose job vanished, expired storage."""

from dataclasses import replace
from datetime import timedelta

from redis import Redis

from webapp.app import create_app
from webapp.executions.maintenance import mark_alive, prune_executions, reap_lost
from webapp.extensions import db
from webapp.models import Execution, Script, ScriptVersion, StorageItem, Tenant, utcnow
from worker.host_api import prune_expired_storage


def _script(name: str = "s") -> Script:
    tenant = db.session.scalar(db.select(Tenant)) or Tenant(name="acme")
    script = Script(tenant=tenant, name=name, type="manual", source="function main(){}", version=1)
    script.versions.append(ScriptVersion(version=1, type="manual", source=script.source, timezone="UTC"))
    db.session.add(script)
    db.session.commit()
    return script


def _execution(script: Script, age: timedelta, status: str = "succeeded", worker: str | None = None) -> Execution:
    execution = Execution(
        tenant_id=script.tenant_id,
        script_id=script.id,
        script_version=1,
        trigger="manual",
        status=status,
        queued_at=utcnow() - age,
        started_at=utcnow() - age,
        worker=worker,
    )
    db.session.add(execution)
    db.session.commit()
    return execution


def test_retention_keeps_the_newest_per_script_and_drops_old_ones(app, settings):
    app = create_app(replace(settings, retention_count=3, retention_days=30))  # same database
    with app.app_context():
        busy, quiet = _script("busy"), _script("quiet")
        kept = [_execution(busy, timedelta(minutes=m)) for m in range(3)]
        for m in range(3, 8):
            _execution(busy, timedelta(minutes=m))
        recent = _execution(quiet, timedelta(days=29))
        _execution(quiet, timedelta(days=31))
        assert prune_executions() == 6
        left = set(db.session.scalars(db.select(Execution.id)))
        assert left == {e.id for e in kept} | {recent.id}


def test_reaper_fails_runs_of_dead_workers_and_vanished_jobs(app, redis_url):
    redis = Redis.from_url(redis_url)
    with app.app_context():
        script = _script()
        alive = _execution(script, timedelta(seconds=30), status="running", worker="alive-worker")
        dead = _execution(script, timedelta(seconds=30), status="running", worker="dead-worker")
        vanished = _execution(script, timedelta(minutes=5), status="queued")
        fresh = _execution(script, timedelta(seconds=1), status="queued")
        mark_alive(redis, "alive-worker")
        assert reap_lost(redis) == 2
        rows = {e.id: e for e in db.session.scalars(db.select(Execution))}
        assert rows[alive.id].status == "running" and rows[fresh.id].status == "queued"
        assert (rows[dead.id].status, rows[dead.id].error_kind) == ("failed", "lost")
        assert rows[dead.id].error_message == "the worker dead-worker stopped during the run"
        assert rows[vanished.id].error_message == "the queued run was lost: its job is no longer in Redis"
        assert rows[dead.id].finished_at is not None


def test_expired_storage_is_pruned(app):
    with app.app_context():
        tenant = Tenant(name="acme")
        db.session.add(tenant)
        db.session.flush()
        db.session.add_all(
            [
                StorageItem(tenant_id=tenant.id, key="old", value="1", expires_at=utcnow() - timedelta(seconds=1)),
                StorageItem(tenant_id=tenant.id, key="new", value="1", expires_at=utcnow() + timedelta(hours=1)),
                StorageItem(tenant_id=tenant.id, key="forever", value="1"),
            ]
        )
        db.session.commit()
        assert prune_expired_storage() == 1
        assert set(db.session.scalars(db.select(StorageItem.key))) == {"new", "forever"}
