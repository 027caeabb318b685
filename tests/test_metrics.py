"""GET /metrics: script metrics aggregated in Redis across worker processes."""

import time
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import bearer
from webapp import create_app


@pytest.fixture
def editor(make_user, make_token) -> dict[str, str]:
    make_user("ed@acme.io", "acme", "editor")
    return bearer(make_token("ed@acme.io"))


def scrape(client, headers=None) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.get_data(as_text=True)
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _script(client, headers, name: str, source: str, **fields) -> str:
    body = {"name": name, "type": "manual", "source": source, **fields}
    response = client.post("/api/v1/scripts", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def _run(client, headers, script_id: str, wait: int = 20) -> dict:
    return client.post(f"/api/v1/scripts/{script_id}/run", json={"wait": wait}, headers=headers).get_json()


def test_counts_histograms_and_gauges_across_two_workers(app, client, editor, start_worker, settings):
    first, second = start_worker(), start_worker()
    ok = _script(client, editor, "ok", "function main() { return 1 }")
    bad = _script(client, editor, "bad", "function main() { throw new Error('no') }")
    endpoint = _script(
        client,
        editor,
        "ep",
        "function main() { return { body: 'hi' } }",
        type="endpoint",
        endpoint_method="GET",
        endpoint_path="/hi",
    )
    runs = [_run(client, editor, ok) for _ in range(4)] + [_run(client, editor, bad) for _ in range(3)]
    assert [r["status"] for r in runs] == ["succeeded"] * 4 + ["failed"] * 3
    for _ in range(2):
        assert client.get("/api/scripts/hi", headers=editor).get_data(as_text=True) == "hi"
    samples = scrape(client)
    label = lambda sid, t, s: (("script_id", sid), ("status", s), ("type", t))  # noqa: E731
    assert samples[("script_executions_total", label(ok, "manual", "success"))] == 4
    assert samples[("script_executions_total", label(bad, "manual", "failed"))] == 3
    assert samples[("script_executions_total", label(endpoint, "endpoint", "success"))] == 2
    hist = (("script_id", ok), ("type", "manual"))
    assert samples[("script_execution_duration_seconds_count", hist)] == 4
    assert samples[("script_execution_duration_seconds_bucket", (("le", "+Inf"), *hist))] == 4
    assert samples[("script_execution_duration_seconds_bucket", (("le", "60.0"), *hist))] == 4
    durations = sum(r["duration_ms"] for r in runs[:4]) / 1000
    assert samples[("script_execution_duration_seconds_sum", hist)] == pytest.approx(durations, rel=1e-6)
    assert samples[("script_errors_total", (("error_kind", "exception"),))] == 3
    assert samples[("script_compile_cache_hits_total", ())] + samples[("script_compile_cache_misses_total", ())] == 9
    assert samples[("active_scripts_gauge", (("type", "manual"),))] == 2
    assert samples[("active_scripts_gauge", (("type", "endpoint"),))] == 1
    assert samples[("script_workers", ())] == 2
    assert {r["worker"] for r in runs} <= {first.name, second.name}
    client.patch(f"/api/v1/scripts/{bad}", json={"status": "disabled"}, headers=editor)
    assert scrape(client)[("active_scripts_gauge", (("type", "manual"),))] == 1
    # Counts live in Redis: a new web process and a restarted worker keep them.
    second.stop()
    start_worker()
    again = scrape(create_app(settings).test_client())
    assert again[("script_executions_total", label(ok, "manual", "success"))] == 4


def test_active_vms_gauge_rises_during_runs_and_falls_after(client, editor, start_worker):
    start_worker()
    start_worker()
    slow = _script(client, editor, "slow", "function main() { const t = Date.now(); while (Date.now() - t < 2000) {} }")
    assert scrape(client)[("active_vms_gauge", ())] == 0
    started = [_run(client, editor, slow, wait=0) for _ in range(2)]
    deadline, peak = time.monotonic() + 5, 0
    while time.monotonic() < deadline and peak < 2:
        peak = max(peak, scrape(client)[("active_vms_gauge", ())])
        time.sleep(0.1)
    assert peak == 2
    assert len(started) == 2
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and scrape(client)[("active_vms_gauge", ())] != 0:
        time.sleep(0.2)
    assert scrape(client)[("active_vms_gauge", ())] == 0


def test_metrics_token(settings, app):
    guarded = create_app(replace(settings, metrics_token="s3cret")).test_client()
    refused = guarded.get("/metrics")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
    assert guarded.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert guarded.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200
