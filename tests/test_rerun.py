"""Run again: an execution's parameters on the script's current version, from its page and over
REST (`POST /api/v1/executions/{id}/rerun`), on SQLite and PostgreSQL."""

import re
import uuid

from tests.conftest import bearer
from webapp.extensions import db
from webapp.models import Execution, Script, utcnow

ECHO = "async function main(event) {\n  return { got: event, version: 1 };\n}\n"


def _script(client, headers: dict, **fields) -> dict:
    body = {"name": f"s-{uuid.uuid4().hex[:8]}", "type": "manual", "source": ECHO, **fields}
    created = client.post("/api/v1/scripts", json=body, headers=headers)
    assert created.status_code == 201, created.get_json()
    return created.get_json()


def _recorded(app, script_id: str, trigger: str = "manual", params: dict | None = None) -> str:
    """An execution row written directly (no worker needed to refuse or queue a re-run)."""
    with app.app_context():
        script = db.session.get(Script, uuid.UUID(script_id))
        execution = Execution(
            id=uuid.uuid4(),
            tenant_id=script.tenant_id,
            script_id=script.id,
            script_version=script.version,
            trigger=trigger,
            status="succeeded",
            params=params,
            queued_at=utcnow(),
        )
        db.session.add(execution)
        db.session.commit()
        return str(execution.id)


def test_rerun_runs_the_current_version_with_the_same_params(client, editor, run_script, start_worker):
    start_worker()
    first = run_script(editor, ECHO, {"name": "Ann", "n": 2})
    assert first["status"] == "succeeded"
    newer = ECHO.replace("version: 1", "version: 2")
    assert (
        client.patch(f"/api/v1/scripts/{first['script_id']}", json={"source": newer}, headers=editor).status_code == 200
    )

    again = client.post(f"/api/v1/executions/{first['id']}/rerun", json={"wait": 20}, headers=editor)
    assert again.status_code == 200, again.get_json()
    body = again.get_json()
    assert body["id"] != first["id"] and body["status"] == "succeeded" and body["trigger"] == "api"
    assert body["params"] == {"name": "Ann", "n": 2} and body["script_version"] == 2
    assert body["result"] == {"got": {"name": "Ann", "n": 2}, "version": 2}


def test_rerun_without_wait_answers_202_with_the_queued_run(app, client, editor):
    script = _script(client, editor)
    original = _recorded(app, script["id"], "cron", {"type": "cron", "scheduled_at": "2026-01-01T00:00:00+00:00"})
    queued = client.post(f"/api/v1/executions/{original}/rerun", headers=editor)
    assert queued.status_code == 202, queued.get_json()
    assert queued.get_json()["status"] == "queued"
    assert queued.get_json()["params"] == {"type": "cron", "scheduled_at": "2026-01-01T00:00:00+00:00"}
    bad = client.post(f"/api/v1/executions/{original}/rerun", json={"wait": -1}, headers=editor)
    assert bad.status_code == 422 and "wait" in bad.get_json()["error"]["fields"]


def test_rerun_is_refused_to_viewers_other_tenants_disabled_scripts_and_endpoint_calls(
    app, client, editor, make_user, make_token
):
    make_user("vi@acme.io", "acme", "viewer")
    make_user("spy@globex.io", "globex", "admin")
    script = _script(client, editor)
    original = _recorded(app, script["id"], params={"a": 1})
    url = f"/api/v1/executions/{original}/rerun"

    viewer = client.post(url, headers=bearer(make_token("vi@acme.io")))
    assert viewer.status_code == 403
    spy = client.post(url, headers=bearer(make_token("spy@globex.io", "globex")))
    assert spy.status_code == 404
    assert client.post(f"/api/v1/executions/{uuid.uuid4()}/rerun", headers=editor).status_code == 404

    client.patch(f"/api/v1/scripts/{script['id']}", json={"status": "disabled"}, headers=editor)
    disabled = client.post(url, headers=editor)
    assert disabled.status_code == 409 and disabled.get_json()["error"]["code"] == "script_disabled"

    endpoint = _script(client, editor, type="endpoint", endpoint_path="/hook", endpoint_method="POST")
    call = _recorded(app, endpoint["id"], "endpoint")
    refused = client.post(f"/api/v1/executions/{call}/rerun", headers=editor)
    assert refused.status_code == 422
    error = refused.get_json()["error"]
    assert error["code"] == "not_replayable" and "stored only as a summary" in error["message"]
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(Execution)) == 2  # nothing was queued


def test_run_again_from_the_execution_page(app, client, editor_session, make_user, login):
    make_user("vi@acme.io", "acme", "viewer")
    headers = {"X-CSRFToken": editor_session}
    script = _script(client, headers)
    original = _recorded(app, script["id"], params={"region": "eu"})
    page = client.get(f"/executions/{original}").get_data(as_text=True)
    assert "Run again</button>" in page and "with the parameters below" in page

    started = client.post(f"/executions/{original}/rerun", data={"csrf_token": editor_session})
    assert started.status_code == 303
    new_id = re.fullmatch(r".*/executions/([0-9a-f-]{36})", started.headers["Location"]).group(1)
    assert new_id != original
    landed = client.get(started.headers["Location"]).get_data(as_text=True)
    assert f"Started {script['name']} again (v1) with the same parameters." in landed
    assert "&#34;region&#34;: &#34;eu&#34;" in landed  # the parameters, shown as JSON
    with app.app_context():
        rerun = db.session.get(Execution, uuid.UUID(new_id))
        assert rerun.trigger == "manual" and rerun.params == {"region": "eu"} and rerun.user_id is not None

    # Without the CSRF token nothing starts.
    assert client.post(f"/executions/{original}/rerun").status_code == 400

    # Endpoint calls: no button, the reason instead; a forged POST is refused with it.
    endpoint = _script(client, headers, type="endpoint", endpoint_path="/hook", endpoint_method="POST")
    call = _recorded(app, endpoint["id"], "endpoint")
    page = client.get(f"/executions/{call}").get_data(as_text=True)
    assert "Run again</button>" not in page and "cannot be run again" in page
    refused = client.post(f"/executions/{call}/rerun", data={"csrf_token": editor_session})
    assert refused.status_code == 422 and "stored only as a summary" in refused.get_data(as_text=True)

    # A disabled script: no button, and why.
    client.patch(f"/api/v1/scripts/{script['id']}", json={"status": "disabled"}, headers=headers)
    page = client.get(f"/executions/{original}").get_data(as_text=True)
    assert "Run again</button>" not in page and "The script is disabled: enable it to run it again." in page
    assert client.post(f"/executions/{original}/rerun", data={"csrf_token": editor_session}).status_code == 409

    # Viewers see no button and may not post.
    client.post("/logout", data={"csrf_token": editor_session})
    csrf = login("vi@acme.io")
    page = client.get(f"/executions/{original}").get_data(as_text=True)
    assert "Run again" not in page
    assert client.post(f"/executions/{original}/rerun", data={"csrf_token": csrf}).status_code == 403


def test_another_tenants_execution_cannot_be_run_again(app, client, editor, make_user, login):
    make_user("spy@globex.io", "globex", "admin")
    original = _recorded(app, _script(client, editor)["id"], params={})
    csrf = login("spy@globex.io")
    assert client.post(f"/executions/{original}/rerun", data={"csrf_token": csrf}).status_code == 404


def test_a_draft_runs_again_as_the_same_draft_even_on_a_disabled_script(client, editor, start_worker):
    start_worker()
    script = _script(client, editor, status="disabled")
    draft_source = "async function main(event) {\n  return { draft: true, got: event };\n}\n"
    ran = client.post(
        f"/api/v1/scripts/{script['id']}/run",
        json={"source": draft_source, "params": {"n": 1}, "wait": 20},
        headers=editor,
    )
    assert ran.status_code == 200, ran.get_json()
    assert ran.get_json()["result"] == {"draft": True, "got": {"n": 1}}

    again = client.post(f"/api/v1/executions/{ran.get_json()['id']}/rerun", json={"wait": 20}, headers=editor)
    assert again.status_code == 200, again.get_json()
    body = again.get_json()
    assert body["trigger"] == "draft" and body["source"] == draft_source
    assert body["result"] == {"draft": True, "got": {"n": 1}}
    versions = client.get(f"/api/v1/scripts/{script['id']}/versions", headers=editor).get_json()
    assert versions["total"] == 1  # nothing was saved


def test_a_run_whose_parameters_were_not_kept_says_so_instead_of_offering_run_again(app, client, editor_session):
    """A full storage quota keeps a note instead of a run's params (webapp/quotas.py): run again
    cannot use them, and says why, rather than "must be a JSON object"."""
    headers = {"X-CSRFToken": editor_session}
    script = _script(client, headers)
    original = _recorded(app, script["id"], params=None)
    refused = client.post(f"/api/v1/executions/{original}/rerun", headers=headers)
    assert refused.status_code == 422
    error = refused.get_json()["error"]
    assert error["code"] == "params_not_kept" and "were not kept" in error["message"]
    page = client.get(f"/executions/{original}").get_data(as_text=True)
    assert "Run again</button>" not in page and "were not kept" in page
