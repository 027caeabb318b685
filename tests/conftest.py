"""Fixtures: the app on SQLite and on PostgreSQL, a private Redis, users, logins, tokens.

Every test that takes `app` (or anything built on it) runs once per database backend.
TEST_DATABASES=sqlite (or postgresql) narrows that while developing.
"""

import os
import re
from collections.abc import Iterator
from dataclasses import replace

import pytest
from flask import Flask
from flask.testing import FlaskClient
from jinja2 import BytecodeCache
from jinja2.bccache import Bucket
from redis import Redis
from werkzeug.security import generate_password_hash

from tests.services import postgres_server, redis_server
from webapp.app import create_app
from webapp.auth.tokens import create_token
from webapp.config import Settings, TenantLimits
from webapp.extensions import db
from webapp.models import Membership, Tenant, User

BACKENDS = [b for b in os.environ.get("TEST_DATABASES", "sqlite,postgresql").split(",") if b]
PASSWORD = "correct-horse-1"
# Test users get a cheap scrypt (N=2^10): logging in still checks a real scrypt hash, at a
# fraction of the cost. Accounts made through the app keep the default (tests/test_cli.py).
PASSWORD_HASH = generate_password_hash(PASSWORD, method="scrypt:1024:8:1")
# A test that takes one of these starts processes (worker, scheduler, gunicorn, sandbox,
# Chromium, a Redis to kill): it is `slow`, and `make test-fast` leaves it out.
PROCESS_FIXTURES = {"start_worker", "start_scheduler", "start_web", "browser", "redis_process", "sandbox"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def settings(database_url: str, redis_url: str, request: pytest.FixtureRequest) -> Settings:
    """The test app's settings; `@pytest.mark.tenants(**limits)` sets its TenantLimits."""
    base = Settings.from_env()
    marker = request.node.get_closest_marker("tenants")
    if marker:
        base = replace(base, tenants=TenantLimits(**marker.kwargs))
    return replace(base, database_url=database_url, redis_url=redis_url, secret_key="test-secret", metrics_token=None)


class _TemplateCache(BytecodeCache):
    """Compiled templates shared by every test's app (keyed by name and source checksum)."""

    def __init__(self) -> None:
        self.compiled: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        if bucket.key in self.compiled:
            bucket.bytecode_from_string(self.compiled[bucket.key])

    def dump_bytecode(self, bucket: Bucket) -> None:
        self.compiled[bucket.key] = bucket.bytecode_to_string()


TEMPLATE_CACHE = _TemplateCache()


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings)
    app.config.update(TESTING=True)
    app.jinja_env.bytecode_cache = TEMPLATE_CACHE
    with app.app_context():
        db.drop_all()
        db.create_all()
    Redis.from_url(settings.redis_url).flushdb()
    yield app
    with app.app_context():
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def make_user(app: Flask):
    """make_user(email, tenant_name, role) -> user id; creates the tenant when missing."""

    def make(email: str, tenant: str = "acme", role: str = "editor") -> int:
        with app.app_context():
            t = db.session.scalar(db.select(Tenant).where(Tenant.name == tenant)) or Tenant(name=tenant)
            user = db.session.scalar(db.select(User).where(User.email == email))
            if user is None:
                user = User(email=email, password_hash=PASSWORD_HASH)
            db.session.add(Membership(user=user, tenant=t, role=role))
            db.session.commit()
            return user.id

    return make


@pytest.fixture
def make_token(app: Flask):
    def make(email: str, tenant: str = "acme", role: str | None = None) -> str:
        with app.app_context():
            t = db.session.scalar(db.select(Tenant).where(Tenant.name == tenant))
            u = db.session.scalar(db.select(User).where(User.email == email))
            if role is None:  # the user's own role, unlike create_token's default (viewer)
                role = db.session.scalar(
                    db.select(Membership.role).where(Membership.tenant_id == t.id, Membership.user_id == u.id)
                )
            return create_token(t, u, "test", role)[1]

    return make


@pytest.fixture
def editor(make_user, make_token) -> dict[str, str]:
    """Bearer headers of ed@acme.io, an editor of acme."""
    make_user("ed@acme.io", "acme", "editor")
    return bearer(make_token("ed@acme.io"))


@pytest.fixture
def admin(make_user, make_token) -> dict[str, str]:
    """Bearer headers of boss@acme.io, an admin of acme."""
    make_user("boss@acme.io", "acme", "admin")
    return bearer(make_token("boss@acme.io"))


@pytest.fixture
def editor_session(make_user, login) -> str:
    """The test client logged in as ed@acme.io (editor of acme); returns the CSRF token."""
    make_user("ed@acme.io", "acme", "editor")
    return login("ed@acme.io")


@pytest.fixture
def admin_session(make_user, login) -> str:
    """The test client logged in as boss@acme.io (admin of acme); returns the CSRF token."""
    make_user("boss@acme.io", "acme", "admin")
    return login("boss@acme.io")


def csrf_from(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert match, "page has no csrf-token meta tag"
    return match.group(1)


@pytest.fixture
def login(client: FlaskClient):
    """login(email) logs the test client in and returns the page's CSRF token."""

    def do(email: str, password: str = PASSWORD) -> str:
        page = client.get("/login")
        token = csrf_from(page.get_data(as_text=True))
        response = client.post("/login", data={"email": email, "password": password, "csrf_token": token})
        assert response.status_code == 302, response.get_data(as_text=True)
        return csrf_from(client.get("/", follow_redirects=True).get_data(as_text=True))  # or the tenant chooser

    return do


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


SOURCE = "async function main(event) {\n  return { ok: true };\n}\n"


def _processes(settings: Settings, kind: type):
    started = []

    def start(**env: str):
        process = kind(settings.database_url, settings.redis_url, **env).start()
        started.append(process)
        return process

    return start, started


@pytest.fixture
def start_worker(settings: Settings):
    """start_worker(**env) -> a running `python -m worker` on this test's database and Redis."""
    from tests.services import WorkerProcess

    start, started = _processes(settings, WorkerProcess)
    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def run_script(client: FlaskClient):
    """run_script(headers, source, params=None, wait=20, **fields) -> the finished execution JSON."""
    counter = iter(range(10_000))

    def run(headers: dict, source: str, params: dict | None = None, wait: int = 20, **fields) -> dict:
        body = {"name": f"script-{next(counter)}", "type": "manual", "source": source, **fields}
        created = client.post("/api/v1/scripts", json=body, headers=headers)
        assert created.status_code == 201, created.get_json()
        return run_again(headers, created.get_json()["id"], params, wait)

    def run_again(headers: dict, script_id: str, params: dict | None = None, wait: int = 20) -> dict:
        response = client.post(
            f"/api/v1/scripts/{script_id}/run", json={"params": params or {}, "wait": wait}, headers=headers
        )
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    run.again = run_again  # type: ignore[attr-defined]
    return run


@pytest.fixture
def start_scheduler(settings: Settings):
    """start_scheduler(**env) -> a running `python -m worker.scheduler` on this test's services."""
    from tests.services import SchedulerProcess

    start, started = _processes(settings, SchedulerProcess)
    yield start
    for scheduler in started:
        scheduler.stop()


@pytest.fixture
def start_web(app: Flask, settings: Settings):
    """start_web(**env) -> the Procfile's `web` (gunicorn, 2 worker processes) on a free port."""
    from tests.web_process import WebProcess

    started: list[WebProcess] = []

    def start(**env: str) -> WebProcess:
        web = WebProcess(settings.database_url, settings.redis_url, **env)
        started.append(web)
        return web.start()

    yield start
    for web in started:
        web.stop()


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    """The test app over real HTTP on 127.0.0.1 at a free port, in a background thread."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
