"""The script form's "Run draft" panel and the examples gallery, through Flask's test client and a
real worker: what the htmx requests answer."""

import re
from contextlib import nullcontext

import pytest

from tests.conftest import PASSWORD, csrf_from
from tests.fetch_upstream import upstream
from tests.services import eventually
from webapp.scripts.examples import EXAMPLES
from webapp.scripts.fields import FIELDS

HTMX = {"HX-Request": "true"}
SOURCE = "async function main(event) {\n  return { saved: true };\n}\n"


def _form(example_fields: dict, csrf: str, **extra: str) -> dict[str, str]:
    return {"csrf_token": csrf, **{k: str(v) for k, v in example_fields.items()}, **extra}


def _outcome(client, html: str) -> str:
    """The finished outcome partial: long-polls a pending one as the browser would."""

    def finished() -> str | None:
        nonlocal html
        if 'class="run-result pending"' not in html:
            return html
        poll = re.search(r'hx-get="([^"]+)"', html).group(1).replace("&amp;", "&")
        html = client.get(poll, headers=HTMX).get_data(as_text=True)
        return None

    return eventually(finished, timeout=30)


def test_the_new_page_offers_examples_that_fill_the_form(client, editor_session):
    page = client.get("/scripts/new").get_data(as_text=True)
    for example in EXAMPLES:
        assert f'href="/scripts/new?example={example.key}"' in page and example.title in page
    page = client.get("/scripts/new?example=json-endpoint").get_data(as_text=True)
    assert 'value="Greeting endpoint"' in page and 'value="/greet/{name}"' in page
    assert "req.query.lang" in page
    assert 'name="draft_param_name" value="Ann"' in page and 'value="lang=de"' in page
    assert 'aria-current="true">JSON endpoint' in page
    assert "Running a draft needs JavaScript" in page  # in <noscript>


def test_the_sample_fields_follow_the_forms_type_and_path(client, editor_session):
    fields = {"csrf_token": editor_session, "type": "endpoint", "endpoint_path": "/orders/{id}/items/{item}"}
    html = client.post("/scripts/draft-sample", data=fields, headers=HTMX).get_data(as_text=True)
    assert 'name="draft_param_id"' in html and 'name="draft_param_item"' in html and 'name="draft_body"' in html
    html = client.post("/scripts/draft-sample", data={**fields, "type": "cron"}, headers=HTMX).get_data(as_text=True)
    assert "cron event fired now" in html and "draft_param" not in html


SECRET_VALUE = "example-token-4711"


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.key for e in EXAMPLES])
def test_every_example_runs_as_a_draft_before_it_is_saved(client, editor_session, start_worker, example):
    """The secrets an example reads are set first; an example that fetches (its sample has a
    `url`) calls a loopback upstream instead, exempted as an operator would exempt one."""
    from webapp.executions.draft_views import typed_sample

    csrf = {"X-CSRFToken": editor_session}
    for name in re.findall(r'secrets\.get\("(\w+)"\)', example.fields["source"]):
        assert client.put(f"/api/v1/secrets/{name}", json={"value": SECRET_VALUE}, headers=csrf).status_code == 201
    fetches = "url" in example.sample
    with upstream("127.0.0.1") if fetches else nullcontext() as server:
        sample = {**example.sample, "url": f"{server.origin}/post"} if fetches else example.sample
        start_worker(**({"FETCH_ALLOWED_NETWORKS": "127.0.0.1/32"} if fetches else {}))
        typed = typed_sample(example.fields["type"], sample)
        response = client.post("/scripts/draft", data=_form(example.fields, editor_session, **typed), headers=HTMX)
        assert response.status_code == 200
        html = _outcome(client, response.get_data(as_text=True))
    assert 'data-status="succeeded"' in html, html
    assert "Execution details" not in html  # nothing was recorded
    assert SECRET_VALUE not in html
    if example.fields["type"] == "endpoint":  # a valid response: else it failed bad_response
        assert "&#34;status&#34;: 200" in html and "Hallo, Ann!" in html
    if fetches:  # the upstream echoed the request: its token shows redacted
        assert server.seen == ["POST /post"]
        assert "Bearer [secret API_TOKEN]" in html
    assert client.get("/api/v1/scripts").get_json()["total"] == 0


def test_an_unsaved_draft_reports_a_syntax_error_and_its_outcome_is_read_only_in_its_tenant(
    app, client, editor_session, start_worker, make_user
):
    worker = start_worker()
    form = {
        "csrf_token": editor_session,
        "name": "x",
        "type": "manual",
        "source": "function main() {\n\n  return (;\n}",
    }
    html = _outcome(client, client.post("/scripts/draft", data=form, headers=HTMX).get_data(as_text=True))
    assert 'data-status="failed"' in html and 'data-error-line="3"' in html and "syntax" in html
    worker.stop()  # the next draft waits in the queue: its answer is the URL to poll
    app.config["RUN_WAIT_SECONDS"] = 0
    pending = client.post("/scripts/draft", data={**form, "source": SOURCE}, headers=HTMX).get_data(as_text=True)
    poll = re.search(r'hx-get="(/scripts/draft/[0-9a-f-]+/result[^"]*)"', pending).group(1).replace("&amp;", "&")
    make_user("eve@globex.io", "globex", "editor")
    other, _ = _logged_in(app, "eve@globex.io")
    assert other.get(poll).status_code == 404
    start_worker()
    assert 'data-status="succeeded"' in _outcome(client, pending)


def _logged_in(app, email: str):
    """Another browser: a new test client logged in as `email`, and its CSRF token."""
    other = app.test_client()
    token = csrf_from(other.get("/login").get_data(as_text=True))
    other.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": token})
    page = other.get("/scripts")
    assert page.status_code == 200
    return other, csrf_from(page.get_data(as_text=True))


def test_an_unsaved_draft_is_refused_with_a_reason(client, editor_session):
    base = {"csrf_token": editor_session, "name": "x", "type": "manual", "source": SOURCE}
    cases = [
        ({"source": "x" * (FIELDS["source"].max_length + 1)}, "Source must be at most"),
        ({"draft_params": "[1]"}, "Sample parameters must be a JSON object"),
        ({"limits_cpu_seconds": "999"}, "Limits: CPU time (s) may not exceed"),
        ({"type": "endpoint", "endpoint_path": "/a", "draft_body": "{nope"}, "JSON body is not valid JSON"),
    ]
    for fields, message in cases:
        html = client.post("/scripts/draft", data={**base, **fields}, headers=HTMX).get_data(as_text=True)
        assert 'data-status="refused"' in html and message in html, html


def test_an_edit_page_draft_runs_the_typed_source_and_is_listed_as_a_draft(client, editor_session, start_worker):
    start_worker()
    body = {"name": "s", "type": "manual", "source": SOURCE}
    created = client.post("/api/v1/scripts", json=body, headers={"X-CSRFToken": editor_session})
    script_id = created.get_json()["id"]
    page = client.get(f"/scripts/{script_id}/edit").get_data(as_text=True)
    assert f'hx-post="/scripts/{script_id}/draft"' in page and 'name="draft_params"' in page
    draft = "function main(event) {\n  console.log('from the draft');\n  return { hi: event.who };\n}\n"
    form = {"csrf_token": editor_session, "source": draft, "draft_params": '{"who": "Ann"}'}
    html = _outcome(client, client.post(f"/scripts/{script_id}/draft", data=form, headers=HTMX).get_data(as_text=True))
    assert 'data-status="succeeded"' in html and "from the draft" in html and "&#34;Ann&#34;" in html
    assert "draft of v1" in html
    assert client.get(f"/api/v1/scripts/{script_id}").get_json()["version"] == 1
    execution_id = re.search(r'href="/executions/([0-9a-f-]+)"', html).group(1)
    detail = client.get(f"/executions/{execution_id}").get_data(as_text=True)
    assert "Draft source" in detail and "from the draft" in detail and ">draft<" not in detail
    listed = client.get(f"/executions?script={script_id}&trigger=draft").get_data(as_text=True)
    assert f"/executions/{execution_id}" in listed


def test_viewers_and_other_tenants_cannot_run_drafts(app, client, editor, make_user):
    created = client.post("/api/v1/scripts", json={"name": "s", "type": "manual", "source": SOURCE}, headers=editor)
    script_id = created.get_json()["id"]
    make_user("view@acme.io", "acme", "viewer")
    viewer, csrf = _logged_in(app, "view@acme.io")
    form = {"csrf_token": csrf, "source": SOURCE}
    assert viewer.post(f"/scripts/{script_id}/draft", data=form, headers=HTMX).status_code == 403
    assert viewer.post("/scripts/draft", data={**form, "type": "manual"}, headers=HTMX).status_code == 403
    make_user("eve@globex.io", "globex", "editor")
    other, csrf = _logged_in(app, "eve@globex.io")
    response = other.post(f"/scripts/{script_id}/draft", data={**form, "csrf_token": csrf}, headers=HTMX)
    assert response.status_code == 404
