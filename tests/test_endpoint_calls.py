"""The lean path of an endpoint call: answered first, recorded right after, never lost."""

import json
import uuid
from datetime import timedelta

import requests
from redis import Redis

from tests.services import eventually
from tests.test_endpoints import _endpoint
from webapp.endpoints.calls import INFLIGHT, reap_unrecorded_calls
from webapp.extensions import db
from webapp.models import Execution, Script, utcnow


def _executions(client, headers, script_id: str) -> list[dict]:
    return client.get(f"/api/v1/scripts/{script_id}/executions", headers=headers).get_json()["items"]


def test_every_call_is_recorded_once_with_its_summary(live_server, client, editor, start_worker):
    start_worker()
    start_worker()
    script = _endpoint(client, editor, "GET", "/n/{n}", "function main(r) { return { body: r.params.n } }")
    session = requests.Session()
    answers = [session.get(f"{live_server}/api/scripts/n/{i}", headers=editor, timeout=30).text for i in range(40)]
    assert answers == [str(i) for i in range(40)]
    rows = eventually(lambda: (r := _executions(client, editor, script["id"])) and len(r) >= 40 and r, what="40 rows")
    assert len(rows) == 40 and len({row["id"] for row in rows}) == 40
    assert sorted(row["http_summary"]["path"] for row in rows) == sorted(f"/n/{i}" for i in range(40))
    assert {row["status"] for row in rows} == {"succeeded"} and {row["trigger"] for row in rows} == {"endpoint"}
    assert all(row["started_at"] and row["finished_at"] and row["worker"] for row in rows)
    assert not Redis.from_url(client.application.config["SETTINGS"].redis_url).hlen(INFLIGHT)


def test_a_failed_call_can_be_looked_up_as_soon_as_it_is_answered(live_server, client, editor, start_worker):
    start_worker()
    _endpoint(client, editor, "GET", "/boom", "function main() { console.log('before'); throw new Error('no') }")
    for _ in range(5):
        error = requests.get(f"{live_server}/api/scripts/boom", headers=editor, timeout=30).json()["error"]
        execution = client.get(f"/api/v1/executions/{error['execution_id']}", headers=editor)
        assert execution.status_code == 200
        assert execution.get_json()["error_kind"] == "exception"
        assert execution.get_json()["logs"][0]["message"] == "before"


def test_a_call_no_worker_took_never_runs_later(live_server, client, editor, start_worker):
    script = _endpoint(
        client,
        editor,
        "POST",
        "/once",
        "async function main() { await storage.set('ran', true); return { body: 'ran' } }",
    )
    response = requests.post(f"{live_server}/api/scripts/once", headers=editor, timeout=30)
    assert response.status_code == 503
    start_worker()
    _endpoint(
        client,
        editor,
        "GET",
        "/ran",
        "async function main() { return { body: (await storage.get('ran')) ?? 'never' } }",
    )
    # The worker serves a later call, so anything still queued would have been taken first.
    assert requests.get(f"{live_server}/api/scripts/ran", headers=editor, timeout=30).text == "never"
    rows = _executions(client, editor, script["id"])
    assert [(row["status"], row["error_kind"]) for row in rows] == [("failed", "lost")]
    assert rows[0]["http_summary"]["status"] == 503


def test_the_reaper_records_calls_whose_worker_and_caller_both_died(app, client, editor, redis_url):
    script = _endpoint(client, editor, "GET", "/x", "function main() { return {} }")
    redis = Redis.from_url(redis_url)
    gone, old, fresh = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    with app.app_context():
        tenant_id = db.session.get(Script, uuid.UUID(script["id"])).tenant_id
    # First in the hash: a call of a script deleted since, which has nothing to be recorded against.
    for call_id, age, script_id in ((gone, 300, str(uuid.uuid4())), (old, 200, script["id"]), (fresh, 5, script["id"])):
        call = {
            "id": call_id,
            "tenant_id": tenant_id,
            "script_id": script_id,
            "script_version": 1,
            "user_id": None,
            "queued_at": (utcnow() - timedelta(seconds=age)).isoformat(),
            "summary": {"method": "GET", "path": "/x", "request_bytes": 0},
        }
        redis.hset(INFLIGHT, call_id, json.dumps(call))
    with app.app_context():
        assert reap_unrecorded_calls(redis, older_than_seconds=150) == 1
        row = db.session.get(Execution, uuid.UUID(old))
        assert (row.status, row.error_kind, row.http_summary["status"]) == ("failed", "lost", 503)
        assert db.session.get(Execution, uuid.UUID(fresh)) is None
    assert redis.hkeys(INFLIGHT) == [fresh.encode()]
