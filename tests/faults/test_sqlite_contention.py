"""SQLite written at once by the web process, two workers and the scheduler, under load.

Nothing a user sees may say "database is locked": no 5xx answer, no failed run, no error in
any process's log. Every run is recorded once, and none is left queued or running.
"""

import itertools
import sqlite3
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import requests
from sqlalchemy.engine import make_url

from tests.conftest import PASSWORD, bearer, csrf_from
from tests.services import SINGLE_TENANT_LOAD, eventually
from webapp.extensions import db
from webapp.models import Execution, utcnow

LOAD_SECONDS = 15
LOCKED = ("database is locked", "OperationalError")
HIT = "async function main(req) { await storage.set('hit:' + req.json.n % 50, req.json); return { body: 'ok' } }"
RUN = "async function main(event) { await storage.set('run:' + event.n % 20, event); return event.n }"
TICK = (
    "async function main(event) { await storage.set('tick:' + context.script.name, event); return event.scheduled_at }"
)
EXPECTED = {"endpoint call": {200}, "api run": {200, 202}, "read": {200}, "page": {200}, "edit": {200}}

Send = Callable[[int], requests.Response]


@dataclass(frozen=True)
class Answer:
    kind: str
    took: float
    status: int  # 0: no answer at all
    body: str
    run_id: str | None = None  # an API run's execution id


@dataclass(frozen=True)
class Scripts:
    manual: str
    edited: str
    ticks: list[str]


def _create(client, headers: dict[str, str], **body: str) -> str:
    created = client.post("/api/v1/scripts", json=body, headers=headers)
    assert created.status_code == 201, created.get_json()
    return created.get_json()["id"]


def _scripts(client, headers: dict[str, str]) -> Scripts:
    """An endpoint, a manual script, a manual script to edit, two every-second cron scripts."""
    _create(client, headers, name="hit", type="endpoint", endpoint_method="POST", endpoint_path="/hit", source=HIT)
    manual = _create(client, headers, name="run", type="manual", source=RUN)
    edited = _create(client, headers, name="edited", type="manual", source="function main() { return 0 }")
    tick = {"type": "cron", "cron_expression": "* * * * * *", "source": TICK}
    return Scripts(manual, edited, [_create(client, headers, name=f"tick-{i}", **tick) for i in range(2)])


def _ui_session(base: str) -> requests.Session:
    session = requests.Session()
    form = {"email": "ed@acme.io", "password": PASSWORD}
    form["csrf_token"] = csrf_from(session.get(f"{base}/login", timeout=30).text)
    assert session.post(f"{base}/login", data=form, timeout=30).status_code == 200  # after the redirect
    return session


def _senders(base: str, headers: dict[str, str], scripts: Scripts) -> list[tuple[str, Send]]:
    """What each load thread sends, one session per thread: (kind, send(n))."""
    ui = _ui_session(base)
    pages = ["/", "/scripts", f"/scripts/{scripts.ticks[0]}", f"/scripts/{scripts.manual}", "/executions"]
    reads = [f"/api/v1/scripts/{sid}/executions" for sid in (scripts.ticks[0], scripts.manual)] + ["/api/v1/scripts"]

    def call(session: requests.Session) -> Send:
        return lambda n: session.post(f"{base}/api/scripts/hit", json={"n": n}, headers=headers, timeout=30)

    def run(session: requests.Session) -> Send:
        body = lambda n: {"params": {"n": n}, "wait": 5}  # noqa: E731
        url = f"{base}/api/v1/scripts/{scripts.manual}/run"
        return lambda n: session.post(url, json=body(n), headers=headers, timeout=30)

    def edit(session: requests.Session) -> Send:
        url = f"{base}/api/v1/scripts/{scripts.edited}"
        return lambda n: session.patch(
            url, json={"source": f"function main() {{ return {n} }}"}, headers=headers, timeout=30
        )

    reader = requests.Session()
    return [
        *[("endpoint call", call(requests.Session())) for _ in range(4)],
        *[("api run", run(requests.Session())) for _ in range(2)],
        ("read", lambda n: reader.get(f"{base}{reads[n % len(reads)]}", headers=headers, timeout=30)),
        ("page", lambda n: ui.get(f"{base}{pages[n % len(pages)]}", timeout=30)),
        ("edit", edit(requests.Session())),
    ]


def _loop(stop: threading.Event, answers: list[Answer], kind: str, send: Send) -> None:
    for n in itertools.count(1):
        if stop.is_set():
            return
        sent = time.monotonic()
        try:
            response = send(n)
        except requests.RequestException as exc:
            answers.append(Answer(kind, time.monotonic() - sent, 0, repr(exc)))
            continue
        run_id = response.json().get("id") if kind == "api run" and response.status_code < 300 else None
        answers.append(Answer(kind, time.monotonic() - sent, response.status_code, response.text, run_id))


def _probe_writes(stop: threading.Event, database_url: str, waits: list[float]) -> None:
    """Take SQLite's write lock over and over, as one more writer would: how long it waits."""
    connection = sqlite3.connect(make_url(database_url).database, timeout=30, isolation_level=None)
    try:
        while not stop.wait(0.01):
            asked = time.monotonic()
            connection.execute("BEGIN IMMEDIATE")
            waits.append(time.monotonic() - asked)
            connection.execute("COMMIT")
    finally:
        connection.close()


def _rows(app) -> list[Execution]:
    with app.app_context():
        rows = db.session.scalars(db.select(Execution)).all()
        db.session.expunge_all()
        return list(rows)


def _settled(app, endpoint_calls: int) -> list[Execution]:
    """Every execution, once all answered endpoint calls are recorded and no run is left
    queued or running (a call is recorded just after its answer)."""

    def settled() -> list[Execution] | None:
        rows = _rows(app)
        finished = all(e.status not in ("queued", "running") for e in rows)
        recorded = sum(1 for e in rows if e.trigger == "endpoint") >= endpoint_calls
        return rows if finished and recorded else None

    return eventually(settled, 30, "every run recorded and finished")


def _assert_fired_every_second(rows: list[Execution], tick: str, started: datetime, ended: datetime) -> int:
    times = sorted(e.scheduled_at for e in rows if e.script_id == uuid.UUID(tick))
    assert len(times) == len(set(times))  # none doubled
    assert {b - a for a, b in itertools.pairwise(times)} == {timedelta(seconds=1)}, times  # none missed
    # The scheduler stops just after `ended`: the fire due in that last second may not have
    # happened yet, so the last one required is the second before it.
    assert times[0] <= started + timedelta(seconds=1) and times[-1] >= ended - timedelta(seconds=2)
    return len(times)


def _ms(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p99 = statistics.quantiles(ms, n=100)[98] if len(ms) > 1 else ms[0]
    return f"p50 {statistics.median(ms):.0f} ms, p99 {p99:.0f} ms, max {ms[-1]:.0f} ms"


def test_no_database_is_locked_reaches_anyone(
    app, client, settings, make_user, make_token, start_web, start_worker, start_scheduler
):
    make_user("ed@acme.io", "acme", "editor")
    headers = bearer(make_token("ed@acme.io"))
    scripts = _scripts(client, headers)
    web = start_web(**SINGLE_TENANT_LOAD)
    answers: list[Answer] = []
    waits: list[float] = []
    stop = threading.Event()
    try:
        workers = [start_worker(), start_worker()]
        scheduler = start_scheduler()
        threads = [
            threading.Thread(target=_loop, args=(stop, answers, *sender))
            for sender in _senders(web.url, headers, scripts)
        ]
        threads.append(threading.Thread(target=_probe_writes, args=(stop, settings.database_url, waits)))
        started = utcnow()
        for thread in threads:
            thread.start()
        time.sleep(LOAD_SECONDS)  # the load runs
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        ended = utcnow()
        scheduler.stop()
        logs = {"web": web.log(), "scheduler": scheduler.log()} | {f"worker {w.name}": w.log() for w in workers}
    finally:
        stop.set()
        web.stop()

    # Nobody was answered with an error, or told about a lock.
    statuses = Counter((a.kind, a.status) for a in answers)
    assert all(status in EXPECTED[kind] for kind, status in statuses), statuses
    assert not [a.body for a in answers if any(word in a.body for word in LOCKED)][:3]
    # Every run recorded once and finished, none failed (a database error fails a run).
    calls = sum(1 for a in answers if a.kind == "endpoint call")
    rows = _settled(app, calls)
    by_trigger = Counter(e.trigger for e in rows)
    assert by_trigger["endpoint"] == calls
    assert sorted(str(e.id) for e in rows if e.trigger == "api") == sorted(a.run_id for a in answers if a.run_id)
    troubled = [(e.trigger, e.status, e.error_message) for e in rows if e.status not in ("succeeded", "skipped")]
    assert not troubled, troubled[:5]
    skipped = [e for e in rows if e.status == "skipped"]
    assert all(e.trigger == "cron" and "still in progress" in e.error_message for e in skipped), skipped
    fires = [_assert_fired_every_second(rows, tick, started, ended) for tick in scripts.ticks]
    # No process logged a database error, handled or not.
    for name, text in logs.items():
        assert not any(word in text for word in LOCKED), f"{name} log:\n{text[-3000:]}"

    for kind in EXPECTED:
        took = [a.took for a in answers if a.kind == kind]
        print(f"\n{kind}: {len(took)} in {LOAD_SECONDS} s, {_ms(took)}", end="")
    print(f"\nSQLite write lock taken by a probe writer {len(waits)} times: waited {_ms(waits)}", end="")
    print(
        f"\nrecorded: {by_trigger['endpoint']} endpoint calls, {by_trigger['api']} API runs, "
        f"{by_trigger['cron']} cron fires ({fires} per script, {len(skipped)} skipped as overlapping); "
        "no 5xx, no 'database is locked' anywhere"
    )
