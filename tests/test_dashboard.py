"""The dashboard: its numbers (webapp/dashboard/stats.py) and chart geometry (charts.py),
checked value by value, and the page a tenant member sees (through the test client, and
with real worker processes for the workers' run slots and the tenant's runs in flight).

Execution rows are written directly, at times chosen relative to a fixed or the real `now`.
"""

import re
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask

from tests.conftest import bearer, csrf_from
from webapp.dashboard import charts, stats
from webapp.extensions import db
from webapp.models import Execution, Script, Tenant, User, utcnow
from webapp.scripts import service

NOW = datetime(2031, 3, 4, 12, 30, 30, 500000, tzinfo=UTC)  # half a minute into 12:30
HOUR = stats.WINDOWS["1h"]


@pytest.fixture
def world(app: Flask, make_user):
    """Scripts in acme (a, b, c) and globex (spy); add(script, status, ms, at) writes a run."""
    make_user("ed@acme.io", "acme", "editor")
    make_user("spy@globex.io", "globex", "editor")
    ids: dict[str, uuid.UUID] = {}
    with app.app_context():
        for name, tenant, email in (
            ("a", "acme", "ed"),
            ("b", "acme", "ed"),
            ("c", "acme", "ed"),
            ("spy", "globex", "spy"),
        ):
            t = db.session.scalar(db.select(Tenant).where(Tenant.name == tenant))
            u = db.session.scalar(db.select(User).where(User.email == f"{email}@{tenant}.io"))
            ids[name] = service.create_script(t, u, {"name": name, "type": "manual", "source": "function main() {}"}).id
        tenants = {name: db.session.get(Script, sid).tenant_id for name, sid in ids.items()}

    def add(script: str, status: str, ms: float | None, at: datetime, **fields) -> str:
        with app.app_context():
            failed = status == "failed"
            values = {
                "error_kind": "exception" if failed else None,
                "error_message": "Error: no at main (line 1, column 20)" if failed else None,
                "duration_ms": ms if status in ("succeeded", "failed") else None,
                **fields,
            }
            execution = Execution(
                id=uuid.uuid4(),
                tenant_id=tenants[script],
                script_id=ids[script],
                script_version=1,
                trigger="manual",
                status=status,
                queued_at=at,
                **values,
            )
            db.session.add(execution)
            db.session.commit()
            return str(execution.id)

    add.ids = ids  # type: ignore[attr-defined]
    add.acme = tenants["a"]  # type: ignore[attr-defined]
    add.globex = tenants["spy"]  # type: ignore[attr-defined]
    return add


# --- stats -------------------------------------------------------------------------------------


def test_window_starts_whole_periods_before_now():
    assert HOUR.start(NOW) == datetime(2031, 3, 4, 11, 31, tzinfo=UTC)  # 60 minutes: 11:31 … 12:30
    assert stats.WINDOWS["6h"].start(NOW) == datetime(2031, 3, 4, 6, 35, tzinfo=UTC)  # 72 × 5 min
    assert stats.WINDOWS["24h"].start(NOW) == datetime(2031, 3, 3, 12, 45, tzinfo=UTC)  # 96 × 15 min
    assert HOUR.period_label == "minute" and stats.WINDOWS["24h"].period_label == "15 minutes"


def test_runs_per_minute_by_status(app, world):
    world("a", "succeeded", 5, NOW)
    world("a", "succeeded", 5, NOW.replace(second=0, microsecond=0))  # the first instant of 12:30
    world("b", "running", None, NOW - timedelta(seconds=10))
    world("b", "queued", None, NOW - timedelta(seconds=20))
    world("c", "failed", 7, NOW - timedelta(minutes=5))
    world("c", "skipped", None, NOW - timedelta(minutes=5, seconds=1))
    world("a", "succeeded", 9, datetime(2031, 3, 4, 11, 31, tzinfo=UTC))  # first period
    world("a", "succeeded", 9, datetime(2031, 3, 4, 11, 30, 59, 999999, tzinfo=UTC))  # before the window
    world("spy", "failed", 1, NOW)  # another tenant's
    with app.app_context():
        periods = stats.periods(world.acme, HOUR, NOW)
    assert len(periods) == 60
    assert periods[0].start == datetime(2031, 3, 4, 11, 31, tzinfo=UTC)
    assert periods[-1].start == datetime(2031, 3, 4, 12, 30, tzinfo=UTC)
    assert periods[-1].counts == {"succeeded": 2, "failed": 0, "skipped": 0, "pending": 2}
    assert periods[-6].counts == {"succeeded": 0, "failed": 1, "skipped": 1, "pending": 0}  # 12:25
    assert periods[0].counts == {"succeeded": 1, "failed": 0, "skipped": 0, "pending": 0}
    assert sum(p.total for p in periods) == 7
    assert [i for i, p in enumerate(periods) if p.total] == [0, 54, 59]


def test_percentiles_are_nearest_rank_over_finished_runs(app, world):
    for ms in range(1, 21):  # 1 … 20 ms, half of them failures
        world("a" if ms % 2 else "b", "succeeded" if ms % 2 else "failed", float(ms), NOW - timedelta(minutes=ms))
    world("a", "running", None, NOW)  # not finished: no duration
    world("a", "succeeded", 5000, NOW - timedelta(hours=2))  # before `since`
    world("spy", "succeeded", 9000, NOW)  # another tenant
    since = HOUR.start(NOW)
    with app.app_context():
        assert stats.percentiles(world.acme, since) == [10, 19]
        assert stats.percentiles(world.acme, since, (1, 99, 100)) == [1, 20, 20]
        assert stats.percentiles(world.globex, NOW - timedelta(days=1)) == [9000, 9000]
        assert stats.percentiles(world.acme, NOW + timedelta(minutes=1)) == [None, None]


def test_slowest_and_most_failing_scripts(app, world):
    for ms in (100, 100, 100):
        world("a", "succeeded", ms, NOW - timedelta(minutes=1))
    world("b", "succeeded", 100, NOW - timedelta(minutes=2))
    world("b", "failed", 500, NOW - timedelta(minutes=2))
    for status in ("failed", "failed", "failed", "succeeded"):
        world("c", status, 10, NOW - timedelta(minutes=3))
    world("c", "skipped", None, NOW)
    world("a", "failed", 99999, NOW - timedelta(hours=3))  # outside the window
    world("spy", "failed", 99999, NOW)
    since = HOUR.start(NOW)
    with app.app_context():
        slow = stats.slowest(world.acme, since)
        failing = stats.most_failing(world.acme, since)
    assert [(s.name, s.runs, s.avg_ms, s.max_ms) for s in slow] == [
        ("b", 2, 300, 500),
        ("a", 3, 100, 100),
        ("c", 4, 10, 10),
    ]
    assert [(s.name, s.failed, s.runs) for s in failing] == [("c", 3, 4), ("b", 1, 2)]
    assert failing[0].failure_rate == 0.75


def test_recent_failures_are_the_tenants_latest_first(app, world):
    older = world("a", "failed", 1, NOW - timedelta(days=3))
    newer = world("b", "failed", 1, NOW - timedelta(minutes=1))
    world("c", "succeeded", 1, NOW)
    world("spy", "failed", 1, NOW)
    with app.app_context():
        assert [str(e.id) for e in stats.recent_failures(world.acme)] == [newer, older]
        assert len(stats.recent_failures(world.acme, limit=1)) == 1


def test_overview_totals_and_failure_rate(app, world):
    world("a", "succeeded", 10, NOW)
    world("a", "failed", 30, NOW)
    world("b", "failed", 20, NOW)
    world("c", "skipped", None, NOW)
    with app.app_context():
        overview = stats.overview(world.acme, HOUR, NOW)
        empty = stats.overview(world.globex, HOUR, NOW)
    assert overview.totals == {"succeeded": 1, "failed": 2, "skipped": 1, "pending": 0}
    assert overview.runs == 4 and overview.failure_rate == pytest.approx(2 / 3)
    assert (overview.p50_ms, overview.p95_ms) == (20, 30)
    assert empty.runs == 0 and empty.failure_rate is None and empty.p50_ms is None
    assert empty.slowest == [] and empty.failing == []


# --- charts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "ceiling"), [(0, 1), (1, 1), (2, 2), (3, 5), (7, 10), (11, 20), (250, 500)])
def test_nice_ceiling(value, ceiling):
    assert charts.nice_ceiling(value) == ceiling


def _periods(counts: dict[int, dict[str, int]], window: stats.Window = HOUR) -> list[stats.Period]:
    start, empty = window.start(NOW), dict.fromkeys(stats.SERIES, 0)
    step = timedelta(seconds=window.seconds)
    return [stats.Period(start + i * step, {**empty, **counts.get(i, {})}) for i in range(window.count)]


def test_runs_chart_stacks_series_to_scale():
    chart = charts.runs_chart(_periods({59: {"succeeded": 2, "failed": 1, "pending": 1}, 10: {"skipped": 1}}), HOUR)
    plot_height = charts.HEIGHT - charts.TOP - charts.BOTTOM  # 166 px for 5 runs (4 rounded up)
    slot = (charts.WIDTH - charts.LEFT - charts.RIGHT) / 60
    assert chart.peak == 4
    assert [(t.label, t.at) for t in chart.y_ticks] == [("0", charts.HEIGHT - charts.BOTTOM), ("5", charts.TOP)]
    last = chart.columns[59]
    assert [r.series for r in last.rects] == ["succeeded", "failed", "pending"]  # bottom up
    one = round(plot_height / 5, 2)
    assert [r.height for r in last.rects] == [round(2 * plot_height / 5, 2), one, one]
    assert last.rects[0].y + last.rects[0].height == pytest.approx(charts.HEIGHT - charts.BOTTOM)
    assert last.rects[1].y + last.rects[1].height == pytest.approx(last.rects[0].y, abs=0.02)
    assert last.rects[0].x == pytest.approx(charts.LEFT + 59 * slot + slot * 0.1, abs=0.01)
    assert last.rects[0].width == pytest.approx(slot * 0.8, abs=0.01)
    assert last.title == "12:30 UTC: 4 runs (2 succeeded, 1 failed, 1 pending)"
    assert chart.columns[10].title == "11:41 UTC: 1 run (1 skipped)"
    assert chart.columns[0].rects == [] and chart.columns[0].title == "11:31 UTC: 0 runs"
    assert [t.label for t in chart.x_ticks] == ["−60 min", "−45 min", "−30 min", "−15 min", "now"]
    assert chart.x_ticks[-1].at == charts.WIDTH - charts.RIGHT


def test_runs_chart_scales_and_labels_other_windows():
    day = stats.WINDOWS["24h"]
    chart = charts.runs_chart(_periods({0: {"succeeded": 12}}, day), day)
    assert [t.label for t in chart.y_ticks] == ["0", "10", "20"]
    assert chart.columns[0].rects[0].height == round(12 * (charts.HEIGHT - charts.TOP - charts.BOTTOM) / 20, 2)
    assert [t.label for t in chart.x_ticks] == ["−24 h", "−18 h", "−12 h", "−6 h", "now"]
    six = charts.runs_chart(_periods({}, stats.WINDOWS["6h"]), stats.WINDOWS["6h"])
    assert [t.label for t in six.x_ticks] == ["−6 h", "−4.5 h", "−3 h", "−1.5 h", "now"]
    assert six.peak == 0 and [t.label for t in six.y_ticks] == ["0", "1"]
    busy = charts.runs_chart(_periods({3: {"succeeded": 4200}}, day), day)  # short labels fit a phone
    assert [t.label for t in busy.y_ticks] == ["0", "2.5k", "5k"]
    assert [c.total for c in busy.columns if c.total] == [4200]


def test_share():
    assert charts.share(50, 200) == 25.0 and charts.share(3, 3) == 100.0 and charts.share(0, 0) == 0.0


# --- the page ----------------------------------------------------------------------------------


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_dashboard_shows_the_tenants_runs(app, client, world, login):
    now = utcnow()
    world("a", "succeeded", 40, now - timedelta(minutes=1))
    world("a", "succeeded", 60, now - timedelta(minutes=1))
    world("b", "succeeded", 900, now - timedelta(minutes=2))
    failed = world("c", "failed", 20, now - timedelta(minutes=3))
    world("c", "succeeded", 20, now - timedelta(hours=3))  # only in the 24-hour window
    world("spy", "failed", 1, now, error_message="globex secret")
    login("ed@acme.io")
    html = client.get("/").get_data(as_text=True)
    text = _text(html)
    assert 'id="stat-runs">4<' in html and 'id="stat-failed">1<' in html
    assert "25.0% of finished runs" in text
    assert 'id="stat-p50">40.0 ms<' in html and 'id="stat-p95">900.0 ms<' in html
    assert "Runs per minute, last hour" in text
    assert "3 succeeded" in text and "1 failed" in text  # the legend
    assert html.count('class="bar succeeded"') == 2 + 1  # two minutes with successes, and the legend swatch
    assert html.count('class="bar failed"') == 1 + 1 + 1  # one minute, the legend swatch, the failing bar
    assert '<svg class="chart"' in html and 'role="img"' in html
    slowest = html[html.index('id="slowest-title"') : html.index('id="failing-title"')]
    assert re.findall(r">(\w)</a>", slowest) == ["b", "a", "c"]
    failing = html[html.index('id="failing-title"') : html.index('id="failures-title"')]
    assert re.findall(r">(\w)</a>", failing) == ["c"] and "100%" in failing
    failures = html[html.index('id="failures-title"') : html.index('id="health-title"')]
    assert f'href="/executions/{failed}"' in failures and "exception" in failures
    assert client.get(f"/executions/{failed}").status_code == 200
    assert "spy" not in text and "globex secret" not in html  # another tenant's runs are not shown
    assert "style=" not in html  # the CSP allows no inline styles

    day = client.get("/?window=24h").get_data(as_text=True)
    assert 'id="stat-runs">5<' in day and "Runs per 15 minutes, last 24 hours" in _text(day)
    assert '<option value="24h" selected>' in day
    bogus = client.get("/?window=7y").get_data(as_text=True)
    assert 'id="stat-runs">4<' in bogus  # an unknown window falls back to the last hour

    partial = client.get("/?window=24h", headers={"HX-Request": "true", "HX-Target": "dashboard-live"})
    body = partial.get_data(as_text=True)
    assert body.lstrip().startswith('<div id="dashboard-live"') and "<html" not in body
    assert 'hx-get="/?window=24h"' in body and 'hx-trigger="every 30s"' in body
    assert 'id="stat-runs">5<' in body


def test_dashboard_without_runs(client, world, login):
    login("ed@acme.io")
    html = client.get("/").get_data(as_text=True)
    text = _text(html)
    assert 'id="stat-runs">0<' in html and 'id="stat-p50">—<' in html and 'id="stat-p95">—<' in html
    assert "Nothing ran in the last hour." in text
    assert "No finished runs in the last hour." in text and "No failed runs in the last hour." in text
    assert "No failed runs." in text and "Nothing has run yet." in text
    assert '<svg class="chart"' not in html
    assert "0 running — nothing will run" in text and "not running" in text


def test_a_viewer_sees_it_and_an_outsider_sees_none_of_it(app, client, world, make_user, login):
    world("a", "failed", 10, utcnow())
    make_user("vi@acme.io", "acme", "viewer")
    make_user("new@nowhere.io", "nowhere", "viewer")
    login("vi@acme.io")
    assert 'id="stat-failed">1<' in client.get("/").get_data(as_text=True)
    client.post("/logout", data={"csrf_token": csrf_from(client.get("/").get_data(as_text=True))})
    login("new@nowhere.io")
    html = client.get("/").get_data(as_text=True)
    assert 'id="stat-runs">0<' in html and "exception" not in html


def test_workers_slots_this_tenants_runs_in_flight_and_queues(app, client, make_user, make_token, login, start_worker):
    make_user("ed@acme.io", "acme", "editor")
    api = bearer(make_token("ed@acme.io"))
    login("ed@acme.io")
    start_worker(WORKER_CONCURRENCY="1")
    start_worker(WORKER_CONCURRENCY="1")
    body = {
        "name": "slow",
        "type": "manual",
        "source": "function main() { const t = Date.now(); while (Date.now() - t < 1500) {} }",
    }
    script = client.post("/api/v1/scripts", json=body, headers=api).get_json()
    idle = _text(client.get("/").get_data(as_text=True))
    assert "2 running with 2 run slots; this tenant's runs in flight: 0 of at most 1" in idle
    assert "0 endpoint calls and 0 other runs waiting" in idle
    client.post(f"/api/v1/scripts/{script['id']}/run", json={"wait": 0}, headers=api)
    deadline = time.monotonic() + 5
    while "2 running with 2 run slots; this tenant's runs in flight: 1 of at most 1" not in (
        busy := _text(client.get("/").get_data(as_text=True))
    ):
        assert time.monotonic() < deadline, busy
        time.sleep(0.1)
    deadline = time.monotonic() + 10
    # The run's counters are written just after its row and its slot's release: wait for all.
    while not ("flight: 0 of" in (after := _text(client.get("/").get_data(as_text=True))) and "1 succeeded" in after):
        assert time.monotonic() < deadline, after
        time.sleep(0.1)
