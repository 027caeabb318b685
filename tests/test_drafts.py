"""Draft runs over REST: an unsaved source runs once through a real worker, as trigger `draft`."""

import uuid
from datetime import timedelta

import pytest

from tests.conftest import bearer
from webapp.executions.service import start_run
from webapp.extensions import db
from webapp.models import Execution, Script, utcnow
from webapp.scripts.fields import FIELDS
from worker.scheduler import record_fires

SAVED = "let calls = 0;\nfunction main(event) {\n  calls++;\n  return { from: 'saved', calls };\n}\n"
DRAFT = "function main(event) {\n  console.log('drafting', event.n);\n  return { from: 'draft', n: event.n };\n}\n"


def _create(client, headers, **fields) -> dict:
    body = {"name": "report", "type": "manual", "source": SAVED, **fields}
    created = client.post("/api/v1/scripts", json=body, headers=headers)
    assert created.status_code == 201, created.get_json()
    return created.get_json()


def _run(client, headers, script_id: str, **body) -> dict:
    response = client.post(f"/api/v1/scripts/{script_id}/run", json={"wait": 20, **body}, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_a_draft_runs_its_source_once_and_saves_nothing(client, editor, start_worker):
    start_worker()
    script = _create(client, editor)
    ran = _run(client, editor, script["id"], source=DRAFT, params={"n": 7})
    assert ran["status"] == "succeeded", ran
    assert ran["result"] == {"from": "draft", "n": 7}
    assert ran["trigger"] == "draft" and ran["script_version"] == 1
    assert ran["source"] == DRAFT and ran["params"] == {"n": 7}
    assert [line["message"] for line in ran["logs"]] == ["drafting 7"]
    assert client.get(f"/api/v1/scripts/{script['id']}", headers=editor).get_json()["version"] == 1
    assert client.get(f"/api/v1/scripts/{script['id']}/versions", headers=editor).get_json()["total"] == 1
    listed = client.get(f"/api/v1/scripts/{script['id']}/executions", headers=editor).get_json()["items"]
    assert [(e["trigger"], e["source"]) for e in listed] == [("draft", DRAFT)]
    normal = _run(client, editor, script["id"])
    assert normal["source"] is None and normal["result"]["from"] == "saved"


def test_a_draft_with_a_syntax_error_fails_with_its_line(client, editor, start_worker):
    start_worker()
    script = _create(client, editor)
    ran = _run(client, editor, script["id"], source="function main() {\n  return 1 +;\n}\n")
    assert ran["status"] == "failed" and ran["error_kind"] == "syntax"
    assert "(line 2, column" in ran["error_message"]


def test_a_disabled_script_may_be_drafted(client, editor, start_worker):
    start_worker()
    script = _create(client, editor, status="disabled")
    assert _run(client, editor, script["id"], source=DRAFT, params={"n": 1})["result"]["from"] == "draft"
    refused = client.post(f"/api/v1/scripts/{script['id']}/run", json={}, headers=editor)
    assert refused.status_code == 409


def test_the_draft_source_is_validated_like_the_form(client, editor):
    script = _create(client, editor)
    too_long = "x" * (FIELDS["source"].max_length + 1)
    for source, message in ((42, "must be a string"), ("  ", "is required"), (too_long, "must be at most")):
        response = client.post(f"/api/v1/scripts/{script['id']}/run", json={"source": source}, headers=editor)
        assert response.status_code == 422
        assert message in response.get_json()["error"]["fields"]["source"]


def test_a_viewer_may_not_draft_and_another_tenant_sees_nothing(client, editor, make_user, make_token):
    script = _create(client, editor)
    make_user("view@acme.io", "acme", "viewer")
    viewer = bearer(make_token("view@acme.io"))
    response = client.post(f"/api/v1/scripts/{script['id']}/run", json={"source": DRAFT}, headers=viewer)
    assert response.status_code == 403
    make_user("eve@globex.io", "globex", "editor")
    other = bearer(make_token("eve@globex.io", "globex"))
    response = client.post(f"/api/v1/scripts/{script['id']}/run", json={"source": DRAFT}, headers=other)
    assert response.status_code == 404


def test_a_draft_never_shares_the_compile_cache_with_its_version(client, editor, start_worker):
    """One worker, one runtime: the saved version's cached code never runs for a draft, and a
    draft never replaces it in the cache."""
    start_worker()
    script = _create(client, editor)
    first = _run(client, editor, script["id"])
    draft = _run(client, editor, script["id"], source=DRAFT, params={"n": 2})
    again = _run(client, editor, script["id"])
    assert first["result"]["from"] == "saved" and draft["result"]["from"] == "draft"
    assert again["result"] == {"from": "saved", "calls": 1}
    assert again["runtime"]["cache_hit"] is True  # the saved version's code, still cached
    assert draft["runtime"]["cache_hit"] is False  # compiled for its run only
    assert first["runtime"]["runtime_id"] == draft["runtime"]["runtime_id"] == again["runtime"]["runtime_id"]
    # ... and a draft first: the version then compiles its own source.
    other = _create(client, editor, name="other")
    assert _run(client, editor, other["id"], source=DRAFT, params={"n": 3})["result"]["from"] == "draft"
    saved = _run(client, editor, other["id"])
    assert saved["result"]["from"] == "saved" and saved["runtime"]["cache_hit"] is False


ENDPOINT = """async function main(req) {
  return { status: 201, body: { who: req.params.name, m: req.method, q: req.query } };
}
"""


@pytest.mark.parametrize(
    ("source", "params", "status", "expected"),
    [
        (ENDPOINT, {"params": {"name": "Ann"}, "query": {"a": "1"}}, "succeeded", None),
        ("function main(req) { return 42 }", {}, "failed", "bad_response"),
        ("function main(req) { return { status: 200, cookies: 1 } }", {}, "failed", "bad_response"),
    ],
)
def test_an_endpoint_draft_gets_a_sample_request_and_must_answer_one(
    client, editor, start_worker, source, params, status, expected
):
    start_worker()
    script = _create(client, editor, type="endpoint", endpoint_method="POST", endpoint_path="/hello/{name}")
    ran = _run(client, editor, script["id"], source=source, params=params)
    assert ran["status"] == status and ran["error_kind"] == expected, ran
    if status == "succeeded":
        assert ran["result"] == {"status": 201, "body": {"who": "Ann", "m": "POST", "q": {"a": "1"}}}
        assert ran["params"]["path"] == "/hello/Ann" and ran["params"]["ip"]


def test_a_cron_draft_gets_a_cron_event_fired_now(client, editor, start_worker):
    start_worker()
    script = _create(client, editor, type="cron", cron_expression="@daily")
    source = "function main(e) { return [e.type, typeof e.scheduled_at, e.fired_at === e.scheduled_at] }"
    assert _run(client, editor, script["id"], source=source)["result"] == ["cron", "string", True]


def test_a_queued_draft_never_holds_back_a_cron_fire(app, client, editor):
    """A fire while the script's previous run is going is skipped; a draft is not such a run."""
    script_id = _create(client, editor, type="cron", cron_expression="@daily")["id"]
    with app.app_context():
        script = db.session.get(Script, uuid.UUID(script_id))
        start_run(script, "draft", {}, source=DRAFT)  # queued: no worker here
        first = utcnow().replace(microsecond=0)
        record_fires([(script, first)])
        start_run(script, "api", {})
        record_fires([(script, first + timedelta(seconds=1))])
        fires = db.session.execute(
            db.select(Execution.scheduled_at, Execution.status)
            .where(Execution.trigger == "cron")
            .order_by(Execution.scheduled_at)
        ).all()
        assert [status for _, status in fires] == ["queued", "skipped"]
