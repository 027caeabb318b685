"""GET /metrics: script metrics aggregated in Redis across worker and scheduler processes, the
web app's HTTP metrics summed across gunicorn workers, all of it checked by `promtool`.

Everything runs for real: worker and scheduler processes, the Procfile's gunicorn `web`.
Expected values come from what the test did and from the execution rows in the database.
"""

import os
import shutil
import signal
import subprocess
import uuid
from dataclasses import replace

import pytest
import requests
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from tests.fetch_upstream import upstream
from tests.services import SINGLE_TENANT_LOAD, eventually
from webapp.app import create_app
from webapp.extensions import db
from webapp.models import Execution

Samples = dict[tuple[str, tuple], float]
OK = "function main() { return 1 }"
THROWS = "function main() { throw new Error('no') }"
SLOW_CRON = "function main() { const t = Date.now(); while (Date.now() - t < 1300) {} return 1 }"
EVERY_SECOND = "*/1 * * * * *"
ALLOWED_LINT = {"active_scripts_gauge", "active_vms_gauge"}  # docs/monitoring.md: names kept from the seed


def parse(text: str) -> Samples:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape(client, headers=None) -> Samples:
    return parse(scrape_text(client, headers))


def scrape_text(client, headers=None) -> str:
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_data(as_text=True)


def scrape_url(url: str, headers=None) -> str:
    response = requests.get(f"{url}/metrics", headers=headers or {}, timeout=30)
    assert response.status_code == 200, response.text
    return response.text


def promtool_problems(text: str) -> list[str]:
    """What `promtool check metrics` says about a scrape (one line per problem)."""
    if shutil.which("promtool") is None:
        raise RuntimeError("promtool is not installed (make test installs Debian's prometheus)")
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode in (0, 3), lines  # 3: lint problems, anything else: unreadable
    return lines


def assert_only_seed_names_flagged(text: str) -> None:
    problems = promtool_problems(text)
    assert {line.split()[0] for line in problems} == ALLOWED_LINT, problems
    assert all("should not include type 'gauge'" in line for line in problems), problems


def _script(client, headers, name: str, source: str, **fields) -> str:
    body = {"name": name, "type": "manual", "source": source, **fields}
    response = client.post("/api/v1/scripts", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def _endpoint(client, headers, name: str, source: str, path: str) -> str:
    return _script(client, headers, name, source, type="endpoint", endpoint_method="GET", endpoint_path=path)


def _cron(client, headers, name: str, source: str) -> str:
    return _script(client, headers, name, source, type="cron", cron_expression=EVERY_SECOND)


def _run(client, headers, script_id: str, wait: int = 20) -> dict:
    return client.post(f"/api/v1/scripts/{script_id}/run", json={"wait": wait}, headers=headers).get_json()


def _disable(client, headers, script_id: str) -> None:
    response = client.patch(f"/api/v1/scripts/{script_id}", json={"status": "disabled"}, headers=headers)
    assert response.status_code == 200, response.get_json()


def _rows(app: Flask, script_id: str | None = None) -> list[Execution]:
    with app.app_context():
        stmt = db.select(Execution)
        if script_id:
            stmt = stmt.where(Execution.script_id == uuid.UUID(script_id))
        rows = list(db.session.scalars(stmt))
        db.session.expunge_all()
        return rows


def _runs(samples: Samples, script_id: str, script_type: str, status: str) -> float:
    labels = (("script_id", script_id), ("status", status), ("type", script_type))
    return samples.get(("script_executions_total", labels), 0)


def _histogram(samples: Samples, script_id: str, script_type: str, part: str, le: str | None = None) -> float:
    labels = (("script_id", script_id), ("type", script_type))
    if le is not None:
        labels = (("le", le), *labels)
    return samples.get((f"script_execution_duration_seconds_{part}", labels), 0)


def assert_histogram_matches_rows(samples: Samples, app: Flask, script_id: str, script_type: str) -> None:
    """The duration histogram of a script holds exactly its finished runs' durations."""
    counted = _histogram(samples, script_id, script_type, "count")
    assert counted, "the script has not run"

    def finished_rows() -> list[Execution]:  # a successful endpoint call is recorded just after its answer
        rows = [e for e in _rows(app, script_id) if e.status in ("succeeded", "failed")]
        return rows if len(rows) >= counted else []

    finished = eventually(finished_rows, 5, f"{counted} runs of {script_id} recorded")
    assert counted == len(finished)
    assert _histogram(samples, script_id, script_type, "bucket", "+Inf") == len(finished)
    fast = sum(1 for e in finished if e.duration_ms / 1000 <= 0.5)
    assert _histogram(samples, script_id, script_type, "bucket", "0.5") == fast
    total = sum(e.duration_ms for e in finished) / 1000
    assert _histogram(samples, script_id, script_type, "sum") == pytest.approx(total, rel=1e-6)


def _script_counters(samples: Samples) -> Samples:
    """What must survive restarts: the counters and histograms (not the 'now' gauges)."""
    return {
        key: value
        for key, value in samples.items()
        if key[0].startswith(("script_executions", "script_execution_duration", "script_errors", "script_compile"))
    }


# --- script metrics ----------------------------------------------------------------------------


def test_manual_and_endpoint_runs_across_two_workers_and_restarts(
    app, client, editor, start_worker, start_web, settings
):
    first, second = start_worker(), start_worker()
    ok = _script(client, editor, "ok", OK)
    bad = _script(client, editor, "bad", THROWS)
    hello = _endpoint(client, editor, "hello", "function main() { return { body: 'hi' } }", "/hi")
    boom = _endpoint(client, editor, "boom", THROWS, "/boom")
    odd = _endpoint(client, editor, "odd", "function main() { return 42 }", "/odd")
    _cron(client, editor, "nightly", OK)  # no scheduler runs here: it only counts as active
    runs = [_run(client, editor, ok) for _ in range(4)] + [_run(client, editor, bad) for _ in range(3)]
    assert [r["status"] for r in runs] == ["succeeded"] * 4 + ["failed"] * 3
    assert [client.get("/api/scripts/hi", headers=editor).status_code for _ in range(2)] == [200, 200]
    assert client.get("/api/scripts/boom", headers=editor).status_code == 500
    assert client.get("/api/scripts/odd", headers=editor).status_code == 502

    def every_run_counted() -> Samples | None:  # endpoint calls: within 0.1 s of their answer
        samples = scrape(client)
        return samples if sum(v for (n, _), v in samples.items() if n == "script_executions_total") == 11 else None

    samples = eventually(every_run_counted, 2, "all 11 runs counted")
    assert _runs(samples, ok, "manual", "success") == 4
    assert _runs(samples, ok, "manual", "failed") == 0
    assert _runs(samples, bad, "manual", "failed") == 3
    assert _runs(samples, hello, "endpoint", "success") == 2
    assert _runs(samples, boom, "endpoint", "failed") == 1
    assert _runs(samples, odd, "endpoint", "failed") == 1
    for script_id, script_type in ((ok, "manual"), (bad, "manual"), (hello, "endpoint"), (boom, "endpoint")):
        assert_histogram_matches_rows(samples, app, script_id, script_type)
    assert samples[("script_errors_total", (("error_kind", "exception"),))] == 4
    assert samples[("script_errors_total", (("error_kind", "bad_response"),))] == 1
    hits = samples[("script_compile_cache_hits_total", ())]
    assert hits + samples[("script_compile_cache_misses_total", ())] == 11
    assert hits >= 11 - 2 * 5  # at most one compile per script per worker
    active = {t: samples[("active_scripts_gauge", (("type", t),))] for t in ("manual", "cron", "endpoint")}
    assert active == {"manual": 2, "cron": 1, "endpoint": 3}
    assert samples[("script_workers", ())] == 2
    # Nothing runs now: the gauge is back to 0 (each worker publishes its state within 0.1 s).
    eventually(lambda: scrape(client)[("active_vms_gauge", ())] == 0, 2, "no runtime busy")
    assert samples[("script_queue_depth", (("queue", "endpoints"),))] == 0
    assert {e.worker for e in _rows(app)} <= {first.name, second.name}

    _disable(client, editor, bad)
    _disable(client, editor, odd)
    active = scrape(client)
    assert active[("active_scripts_gauge", (("type", "manual"),))] == 1
    assert active[("active_scripts_gauge", (("type", "endpoint"),))] == 2

    # The counts live in Redis: a restarted worker and restarted web processes keep them.
    second.stop()
    start_worker()
    counters = _script_counters(samples)
    assert _script_counters(scrape(create_app(settings).test_client())) == counters
    web = start_web()
    assert _script_counters(parse(scrape_url(web.url))) == counters
    web.stop()
    restarted = start_web()
    assert _script_counters(parse(scrape_url(restarted.url))) == counters
    assert _run(client, editor, ok)["status"] == "succeeded"
    assert _runs(parse(scrape_url(restarted.url)), ok, "manual", "success") == 5


def test_cron_fires_skips_and_scheduler_lag(app, client, editor, start_worker, start_scheduler):
    start_worker()
    start_worker()
    scheduler = start_scheduler()
    slow = _cron(client, editor, "slow", SLOW_CRON)  # outlasts its second: the next fire is skipped
    failing = _cron(client, editor, "failing", THROWS)
    eventually(
        lambda: (
            {"succeeded", "skipped"} <= {e.status for e in _rows(app, slow)}
            and len([e for e in _rows(app, failing) if e.status == "failed"]) >= 2
        ),
        20,
        "slow cron runs and skips, failing cron runs",
    )
    live = scrape(client)
    assert live[("script_schedulers", ())] == 1
    assert live[("script_scheduler_lag_seconds", ())] < 3

    _disable(client, editor, slow)
    _disable(client, editor, failing)
    eventually(
        lambda: all(e.status in ("succeeded", "failed", "skipped") for e in _rows(app)), 15, "cron runs to finish"
    )
    samples = scrape(client)
    rows = _rows(app)
    by = lambda script_id, status: sum(1 for e in rows if str(e.script_id) == script_id and e.status == status)  # noqa: E731
    assert _runs(samples, slow, "cron", "success") == by(slow, "succeeded") >= 1
    assert _runs(samples, slow, "cron", "failed") == 0
    assert _runs(samples, failing, "cron", "failed") == by(failing, "failed") >= 2
    assert_histogram_matches_rows(samples, app, slow, "cron")
    assert_histogram_matches_rows(samples, app, failing, "cron")
    assert samples[("script_errors_total", (("error_kind", "exception"),))] == by(failing, "failed")
    assert samples[("script_cron_fires_total", ())] == len(rows) == len({(e.script_id, e.scheduled_at) for e in rows})
    assert samples[("script_cron_skips_total", ())] == sum(1 for e in rows if e.status == "skipped") >= 1
    assert samples[("active_scripts_gauge", (("type", "cron"),))] == 0

    # A scheduler that stopped: none alive, and the next due fire falls further behind.
    scheduler.stop()
    _cron(client, editor, "waiting", OK)
    stalled = eventually(lambda: (s := scrape(client))[("script_scheduler_lag_seconds", ())] >= 1 and s, 10, "lag")
    assert stalled[("script_schedulers", ())] == 0
    assert stalled[("active_scripts_gauge", (("type", "cron"),))] == 1


def test_active_vms_gauge_rises_during_runs_and_falls_after(client, editor, start_worker):
    start_worker(**SINGLE_TENANT_LOAD)  # both runs are one tenant's: both may run at once
    start_worker(**SINGLE_TENANT_LOAD)
    slow = _script(client, editor, "slow", "function main() { const t = Date.now(); while (Date.now() - t < 2000) {} }")
    assert scrape(client)[("active_vms_gauge", ())] == 0
    started = [_run(client, editor, slow, wait=0) for _ in range(2)]
    assert all(r["status"] in ("queued", "running") for r in started)
    eventually(lambda: scrape(client)[("active_vms_gauge", ())] == 2, 5, "both runs in flight")
    eventually(lambda: scrape(client)[("active_vms_gauge", ())] == 0, 15, "both runs over")


def test_a_deleted_scripts_series_leave_the_scrape(client, editor, start_worker):
    start_worker()  # one worker: its runs go one after another
    kept = _script(client, editor, "kept", OK)
    doomed = _script(client, editor, "doomed", THROWS)
    endpoint = _endpoint(client, editor, "doomed-endpoint", "function main() { return { body: 'hi' } }", "/hi")
    in_flight = _script(
        client, editor, "in-flight", "function main() { const t = Date.now(); while (Date.now() - t < 1500) {} }"
    )
    assert _run(client, editor, kept)["status"] == "succeeded"
    assert _run(client, editor, doomed)["status"] == "failed"
    # The last run's tenant slot may be released a moment after its outcome is read: a call in
    # that moment gets 429 (Retry-After: 1) and runs nothing, so a client calls again.
    eventually(lambda: client.get("/api/scripts/hi", headers=editor).status_code == 200, 5, "the call answered")
    eventually(lambda: _runs(scrape(client), endpoint, "endpoint", "success") == 1, 5, "the call counted")
    assert _runs(scrape(client), doomed, "manual", "failed") == 1
    running = _run(client, editor, in_flight, wait=0)["id"]
    eventually(
        lambda: client.get(f"/api/v1/executions/{running}", headers=editor).get_json()["status"] == "running",
        10,
        "the slow run started",
    )
    for script_id in (doomed, endpoint, in_flight):  # the slow one is counted after it is gone
        assert client.delete(f"/api/v1/scripts/{script_id}", headers=editor).status_code == 204
    # The worker takes this run once the deleted script's run is over (and counted).
    assert _run(client, editor, kept)["status"] == "succeeded"

    def after_both_runs() -> Samples | None:
        samples = scrape(client)
        return samples if _runs(samples, kept, "manual", "success") == 2 else None

    samples = eventually(after_both_runs, 5, "the second run counted")
    assert _histogram(samples, kept, "manual", "count") == 2
    text = scrape_text(client)
    for script_id in (doomed, endpoint, in_flight):
        assert script_id not in text
    assert f'script_executions_total{{script_id="{kept}"' in text


FETCHES = """async function main(e) {
  const answered = await fetch(e.exempt + '/echo?status=404');
  try { await fetch(e.other + '/'); } catch (error) { return [answered.status, error.message] }
}"""


def _fetch_samples(samples: Samples, outcome: str, le: str = "+Inf") -> tuple[float, float, float]:
    """(calls counted, histogram count, its bucket `le`) of one fetch outcome."""
    labels = (("outcome", outcome),)
    return (
        samples[("script_fetch_requests_total", labels)],
        samples.get(("script_fetch_duration_seconds_count", labels), 0),
        samples.get(("script_fetch_duration_seconds_bucket", (("le", le), *labels)), 0),
    )


def test_fetch_calls_by_outcome_from_runs_and_endpoint_calls(app, client, editor, start_worker):
    start_worker(FETCH_ALLOWED_NETWORKS="127.0.0.1/32")  # 127.0.0.2 stays blocked
    samples = scrape(client)
    assert {_fetch_samples(samples, o) for o in ("answered", "blocked", "timeout", "dns")} == {(0, 0, 0)}
    with upstream("127.0.0.1") as exempt, upstream("127.0.0.2") as other:
        manual = _script(client, editor, "fetches", FETCHES)
        params = {"exempt": exempt.origin, "other": other.origin}
        ran = client.post(f"/api/v1/scripts/{manual}/run", json={"params": params, "wait": 20}, headers=editor)
        assert ran.get_json()["result"] == [404, "fetch: blocked address 127.0.0.2 (loopback) for 127.0.0.2"]
        source = f"async function main() {{ return {{ body: (await fetch('{exempt.origin}/echo')).statusText }} }}"
        _endpoint(client, editor, "relay", source, "/relay")
        eventually(lambda: client.get("/api/scripts/relay", headers=editor).status_code == 200, 5, "the call answered")
        assert other.seen == [] and len(exempt.seen) == 2

    def every_call_counted() -> Samples | None:  # the endpoint call's counts: within 0.1 s of its answer
        samples = scrape(client)
        return samples if _fetch_samples(samples, "answered")[0] == 2 else None

    samples = eventually(every_call_counted, 2, "both answered calls counted")
    assert _fetch_samples(samples, "answered") == (2, 2, 2)
    assert _fetch_samples(samples, "blocked") == (1, 1, 1)
    assert sum(v for (n, _), v in samples.items() if n == "script_fetch_requests_total") == 3
    fetch_series = [labels for name, labels in samples if name.startswith("script_fetch_")]
    assert {key for labels in fetch_series for key, _ in labels} == {"outcome", "le"}  # never per script
    # The histogram holds the durations the executions recorded (the endpoint call's row is
    # written with its counts, a moment after them).
    calls = eventually(
        lambda: len(c := [c for e in _rows(app) for c in e.http_calls or ()]) == 3 and c, 5, "3 calls recorded"
    )
    for outcome in ("answered", "blocked"):
        mine = [c for c in calls if c.get("error", "answered") == outcome]
        fast = sum(1 for c in mine if c["duration_ms"] <= 500)
        assert _fetch_samples(samples, outcome, "0.5") == (len(mine), len(mine), fast)
        seconds = samples[("script_fetch_duration_seconds_sum", (("outcome", outcome),))]
        assert seconds == pytest.approx(sum(c["duration_ms"] for c in mine) / 1000, abs=1e-9)
    assert_only_seed_names_flagged(scrape_text(client))


def test_metrics_token(settings, app):
    guarded = create_app(replace(settings, metrics_token="s3cret")).test_client()
    refused = guarded.get("/metrics")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
    assert guarded.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert guarded.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200


# --- HTTP metrics of the web app ---------------------------------------------------------------


def _http_requests(samples: Samples, rule: str, status: str = "200") -> tuple[float, float]:
    """(requests counted by the exporter's counter, requests timed for this route)."""
    total = samples.get(("flask_http_request_total", (("method", "GET"), ("status", status))), 0)
    timed = (("method", "GET"), ("status", status), ("url_rule", rule))
    return total, samples.get(("flask_http_request_duration_seconds_count", timed), 0)


def test_http_metrics_in_one_process(client):
    for _ in range(5):
        assert client.get("/healthz").status_code == 200
    client.get("/metrics")  # scrapes are not app traffic
    samples = scrape(client)
    assert _http_requests(samples, "/healthz") == (5, 5)
    assert samples[("flask_exporter_info", (("version", "0.23.2"),))] == 1
    assert not any(name.endswith("_created") for name, _ in samples)


OPEN_METRICS_WARNING = "METRICS_TOKEN is not set: GET /metrics answers anyone"


def test_a_web_process_without_metrics_token_warns_at_start(app, start_web):
    web = start_web()
    assert requests.get(f"{web.url}/metrics", timeout=30).status_code == 200  # Prometheus' convention
    warnings = [line for line in web.log().splitlines() if OPEN_METRICS_WARNING in line]
    assert len(warnings) == 1 and "[WARNING]" in warnings[0], web.log()  # once, from the master


def test_http_metrics_sum_every_gunicorn_worker(app, start_web):
    web = start_web(METRICS_TOKEN="s3cret")
    auth = {"Authorization": "Bearer s3cret"}
    assert requests.get(f"{web.url}/metrics", timeout=30).status_code == 401
    assert OPEN_METRICS_WARNING not in web.log()
    served_by = lambda path: {pid for pid, _, p, _ in web.served() if p == path}  # noqa: E731

    sent = 0
    while sent < 200 and len(served_by("/healthz")) < 2:  # until both workers have answered some
        assert requests.get(f"{web.url}/healthz", timeout=30).status_code == 200
        sent += 1
    assert len(served_by("/healthz")) == 2, web.served()

    answers = []
    while len(answers) < 100 and (len(served_by("/metrics")) < 2 or len(answers) < 3):
        answers.append(_http_requests(parse(scrape_url(web.url, auth)), "/healthz"))
    assert len(served_by("/metrics")) == 2, web.served()  # both workers answered scrapes...
    assert set(answers) == {(sent, sent)}  # ...and each counted every request, whoever served it

    # A worker that exits (gunicorn replaces it) takes none of the counts with it.
    victim = next(iter(web.worker_pids()))
    os.kill(victim, signal.SIGTERM)
    replaced = web.wait_for_workers(2, besides={victim})
    assert victim not in replaced
    assert requests.get(f"{web.url}/healthz", timeout=30).status_code == 200
    text = scrape_url(web.url, auth)
    assert _http_requests(parse(text), "/healthz") == (sent + 1, sent + 1)
    assert_only_seed_names_flagged(text)


# --- promtool --------------------------------------------------------------------------------


def test_promtool_flags_only_the_seed_gauge_names(app, client, editor, start_worker, start_scheduler):
    start_worker()
    start_scheduler()
    manual_ok, manual_bad = _script(client, editor, "ok", OK), _script(client, editor, "bad", THROWS)
    assert _run(client, editor, manual_ok)["status"] == "succeeded"
    assert _run(client, editor, manual_bad)["status"] == "failed"
    _endpoint(client, editor, "hello", "function main() { return { body: 'hi' } }", "/hi")
    _endpoint(client, editor, "boom", THROWS, "/boom")
    assert client.get("/api/scripts/hi", headers=editor).status_code == 200
    assert client.get("/api/scripts/boom", headers=editor).status_code == 500
    cron_ok, cron_bad = _cron(client, editor, "tick", OK), _cron(client, editor, "tock", THROWS)
    eventually(
        lambda: (
            {e.status for e in _rows(app, cron_ok)} >= {"succeeded"}
            and {e.status for e in _rows(app, cron_bad)} >= {"failed"}
        ),
        10,
        "a cron success and a cron failure",
    )
    every_kind = {(t, s) for t in ("manual", "cron", "endpoint") for s in ("success", "failed")}

    def every_kind_counted() -> str | None:  # endpoint calls: within 0.1 s of their answer
        text = scrape_text(client)
        runs = [dict(labels) for name, labels in parse(text) if name == "script_executions_total"]
        return text if {(r["type"], r["status"]) for r in runs} == every_kind else None

    text = eventually(every_kind_counted, 2, "every kind counted")
    samples = parse(text)
    assert samples[("flask_http_request_total", (("method", "POST"), ("status", "201")))] == 6  # scripts created
    assert_only_seed_names_flagged(text)
    names = [f.name for f in text_string_to_metric_families(text)]
    assert len(names) == len(set(names)), "a metric family is exported twice"
