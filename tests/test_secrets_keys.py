"""A wrong or missing SECRETS_KEY at start (issue 15): every long-running process refuses to
start, naming the id of the key it lacks and never a key; the right key list (also with a new
key first) starts; key ids are kept on set, replace and rotation (docs/secrets.md, "Keys")."""

import base64
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from flask_migrate import upgrade
from redis import Redis
from sqlalchemy import text

from tests.services import eventually
from tests.web_process import procfile_command
from webapp import config
from webapp.app import create_app
from webapp.extensions import db
from webapp.models import Secret, Tenant
from webapp.secret_store import service
from webapp.secret_store.key_check import check_app_keys, check_settings_keys
from webapp.secret_store.keys import SecretsKeyError, key_id

ROOT = Path(__file__).resolve().parent.parent
OLD, NEW, WRONG = (Fernet.generate_key().decode() for _ in range(3))


def _id(key: str) -> str:
    return key_id(base64.urlsafe_b64decode(key))


def _app(settings, keys: str):
    app = create_app(replace(settings, secrets_key=keys, secrets_key_origin="env"))
    app.config.update(TESTING=True)
    return app


@pytest.fixture
def stored(app, settings, make_user) -> None:
    """3 secrets of 2 tenants, encrypted with OLD."""
    make_user("ed@acme.io", "acme")
    make_user("eve@globex.io", "globex")
    with _app(settings, OLD).app_context():
        tenants = dict(db.session.execute(db.select(Tenant.name, Tenant.id)).all())
        for tenant, name in (("acme", "A_KEY"), ("acme", "B_KEY"), ("globex", "C_KEY")):
            service.put(tenants[tenant], name, f"value of {name}", None)


def _env(settings, **env: str) -> dict[str, str]:
    merged = {**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url, **env}
    merged.update(SECRET_KEY="test", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    merged.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return {k: v for k, v in merged.items() if v is not None}


RQ_WORKER = f'exec "{sys.executable}" -m rq.cli worker -w worker.main.ScriptWorker -u "$REDIS_URL" --burst default'
COMMANDS = {
    "worker": [sys.executable, "-m", "worker"],
    "rq worker": ["/bin/sh", "-c", RQ_WORKER],  # README: a pool runs ScriptWorker through rq's CLI
    "scheduler": [sys.executable, "-m", "worker.scheduler"],
    "web": ["/bin/sh", "-c", "exec " + procfile_command("web")],
}


def _refused(command: list[str], env: dict[str, str], cwd: Path = ROOT) -> str:
    """The output of a process that must exit at start, not serve."""
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("process", sorted(COMMANDS))
def test_a_wrong_key_refuses_to_start_naming_the_missing_key(stored, settings, process):
    output = _refused(COMMANDS[process], _env(settings, SECRETS_KEY=WRONG, PORT="0"))
    assert f"SECRETS_KEY lacks the key {_id(OLD)} that encrypted 3 secrets of 2 tenants" in output
    assert 'set SECRETS_KEY to include it (docs/secrets.md, "Keys")' in output
    assert f"The keys it has: {_id(WRONG)}" in output
    assert OLD not in output and WRONG not in output and "value of" not in output


@pytest.mark.slow
def test_an_rq_worker_pool_with_a_wrong_key_starts_no_worker(stored, settings, tmp_path):
    """The pool itself keeps running (rq starts a new worker for each that exits), but every
    worker it starts refuses at once, saying why: none registers or takes a job."""
    output = tmp_path / "pool.log"
    pool_args = ["worker-pool", "-n", "1", "-w", "worker.main.ScriptWorker", "-u", settings.redis_url, "default"]
    with output.open("w") as log:
        pool = subprocess.Popen(
            [sys.executable, "-m", "rq.cli", *pool_args],
            env=_env(settings, SECRETS_KEY=WRONG),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        eventually(lambda: output.read_text().count(f"lacks the key {_id(OLD)}") >= 2, 60, "two refusals")
        assert Redis.from_url(settings.redis_url).scard("rq:workers") == 0
    finally:
        pool.terminate()
        pool.wait(timeout=20)
    assert OLD not in output.read_text() and WRONG not in output.read_text()


@pytest.mark.slow
def test_an_unset_key_on_another_host_refuses_to_start_saying_it_was_generated(stored, settings, tmp_path):
    """A second host: the same code, SECRETS_KEY unset, no instance/ yet."""
    host = tmp_path / "host"
    for part in ("webapp", "worker"):
        shutil.copytree(ROOT / part, host / part, ignore=shutil.ignore_patterns("__pycache__"))
    output = _refused(COMMANDS["worker"], _env(settings, SECRETS_KEY=None), cwd=host)
    generated = (host / "instance" / "secrets_key").read_text().strip()
    assert (
        "SECRETS_KEY is unset and instance/secrets_key was generated on this host just now, so it lacks "
        f"the key {_id(OLD)} that encrypted 3 secrets of 2 tenants" in output
    )
    assert generated not in output and OLD not in output
    again = _refused(COMMANDS["worker"], _env(settings, SECRETS_KEY=None), cwd=host)
    assert "SECRETS_KEY is unset, so this host's instance/secrets_key is used, and it lacks" in again


def test_the_web_start_check_says_when_the_key_was_just_generated(stored, settings, tmp_path, monkeypatch):
    monkeypatch.delenv("SECRETS_KEY", raising=False)
    monkeypatch.setattr(config, "INSTANCE_DIR", tmp_path / "instance")
    fresh = replace(config.Settings.from_env(), database_url=settings.database_url)
    assert fresh.secrets_key_origin == "generated"
    with pytest.raises(SecretsKeyError) as caught:
        check_settings_keys(fresh)
    assert "instance/secrets_key was generated on this host just now" in str(caught.value)
    assert fresh.secrets_key not in str(caught.value)
    assert config.Settings.from_env().secrets_key_origin == "instance"


@pytest.mark.slow
def test_every_process_starts_with_the_new_key_first_and_the_old_second(
    stored, settings, start_worker, start_scheduler, start_web
):
    keys = f"{NEW},{OLD}"
    start_worker(SECRETS_KEY=keys)
    start_scheduler(SECRETS_KEY=keys)
    start_web(SECRETS_KEY=keys)


def test_the_start_check_passes_with_the_right_keys_and_an_empty_table(app, stored, settings):
    for keys in (OLD, f"{NEW},{OLD}", f"{OLD},{WRONG}"):
        check_app_keys(_app(settings, keys))
        check_settings_keys(replace(settings, secrets_key=keys))
    with app.app_context():
        db.session.execute(db.delete(Secret))
        db.session.commit()
    check_app_keys(_app(settings, WRONG))


def test_key_ids_follow_set_replace_and_rotation(stored, settings):
    with _app(settings, f"{NEW},{OLD}").app_context():
        tenant_id = db.session.scalar(db.select(Tenant.id).where(Tenant.name == "acme"))
        service.put(tenant_id, "A_KEY", "replaced", None)
        ids = dict(db.session.execute(db.select(Secret.name, Secret.key_id)).all())
        assert ids == {"A_KEY": _id(NEW), "B_KEY": _id(OLD), "C_KEY": _id(OLD)}
    with pytest.raises(SecretsKeyError, match=f"lacks the key {_id(OLD)} that encrypted 2 secrets of 2 tenants"):
        check_app_keys(_app(settings, NEW))
    with _app(settings, f"{NEW},{OLD}").app_context():
        assert service.rotate().rotated == 2
        assert set(db.session.scalars(db.select(Secret.key_id))) == {_id(NEW)}
    check_app_keys(_app(settings, NEW))
    with pytest.raises(SecretsKeyError, match=f"lacks the key {_id(NEW)} that encrypted 3 secrets of 2 tenants"):
        check_app_keys(_app(settings, OLD))


def test_values_stored_before_key_ids_are_checked_by_decrypting_one(app, stored, settings):
    with app.app_context():
        db.session.execute(text("UPDATE secrets SET key_id = NULL"))
        db.session.commit()
    check_app_keys(_app(settings, OLD))
    with pytest.raises(SecretsKeyError) as caught:
        check_app_keys(_app(settings, WRONG))
    assert "the key that encrypted 3 secrets of 2 tenants stored before key ids were recorded" in str(caught.value)
    with _app(settings, OLD).app_context():  # rotate-key records their ids
        assert (service.rotate().current, set(db.session.scalars(db.select(Secret.key_id)))) == (3, {_id(OLD)})


def test_a_database_before_the_upgrade_is_not_checked(app, settings):
    """`db upgrade` and the processes before it: no table, then no key_id column yet."""
    with app.app_context():
        db.drop_all()
        # Another test on this database may have left Alembic's own table (not in the models).
        db.session.execute(text("DROP TABLE IF EXISTS alembic_version"))
        db.session.commit()
    check_app_keys(_app(settings, WRONG))
    with app.app_context():
        upgrade(revision="f2a6d8c4e1b7")  # the secrets table without key_id
        db.session.execute(text("INSERT INTO tenants (id, name, created_at) VALUES (1, 'acme', CURRENT_TIMESTAMP)"))
        token = Fernet(OLD).encrypt(b"old value").decode()
        db.session.execute(
            text(
                "INSERT INTO secrets (tenant_id, name, token, created_at, updated_at)"
                " VALUES (1, 'OLD_KEY', :token, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ),
            {"token": token},
        )
        db.session.commit()
    check_app_keys(_app(settings, WRONG))
    with app.app_context():
        upgrade()
    check_app_keys(_app(settings, OLD))
    with pytest.raises(SecretsKeyError, match="1 secret of 1 tenant stored before key ids were recorded"):
        check_app_keys(_app(settings, WRONG))
    with app.app_context():  # the next test's fixture makes its tables with create_all
        db.session.execute(text("DROP TABLE alembic_version"))
        db.session.commit()


@pytest.mark.slow
def test_db_upgrade_on_a_fresh_database_runs_whatever_the_key(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}", "SECRETS_KEY": WRONG}
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
