"""Running scripts from the UI and reading executions, through the Flask test client.

Runs go through a real `python -m worker` process (start_worker); listing tests write
execution rows directly so they need no worker.
"""

import json
import re
import threading
import time
import uuid
from datetime import timedelta

import pytest

from webapp.extensions import db
from webapp.models import Execution, Script, Tenant, User, utcnow
from webapp.scripts import service
from worker.fetch.errors import KINDS

HTMX = {"HX-Request": "true", "HX-Target": "run-result"}
XSS = "<img src=x onerror=alert(1)>"
XSS_ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"
GREET = """async function main(event) {
  console.log("hello", event.name);
  console.warn("careful");
  return { greeting: `hi ${event.name}`, n: event.n };
}
"""


@pytest.fixture
def make_script(app):
    """make_script(email, tenant="acme", **fields) -> script id, created through the service."""

    def make(email: str, tenant: str = "acme", **fields) -> str:
        with app.app_context():
            t = db.session.scalar(db.select(Tenant).where(Tenant.name == tenant))
            u = db.session.scalar(db.select(User).where(User.email == email))
            data = {"name": f"s-{uuid.uuid4().hex[:8]}", "type": "manual", "source": GREET, **fields}
            return str(service.create_script(t, u, data).id)

    return make


def _executions(app, script_id: str) -> list[Execution]:
    with app.app_context():
        rows = db.session.scalars(db.select(Execution).where(Execution.script_id == uuid.UUID(script_id)))
        return list(rows)


def _run(client, csrf: str, script_id: str, params: str, htmx: bool = True):
    headers = HTMX if htmx else {}
    return client.post(f"/scripts/{script_id}/run", data={"csrf_token": csrf, "params": params}, headers=headers)


def _execution_id(html: str) -> str:
    match = re.search(r'href="/executions/([0-9a-f-]{36})"', html)
    assert match, html
    return match.group(1)


def test_run_with_params_shows_result_and_logs_in_place(app, client, editor_session, make_script, start_worker):
    start_worker()
    script_id = make_script("ed@acme.io")
    page = client.get(f"/scripts/{script_id}").get_data(as_text=True)
    assert 'id="run-form"' in page and 'name="params"' in page and ">{}</textarea>" in page
    assert f'hx-post="/scripts/{script_id}/run"' in page

    response = _run(client, editor_session, script_id, '{"name": "Ann", "n": 2}')
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert html.lstrip().startswith('<div id="run-result"') and "<html" not in html  # a partial
    assert 'data-status="succeeded"' in html and '<span class="badge succeeded">succeeded</span>' in html
    assert "hx-get" not in html  # finished: no further polling
    assert '<form id="run-form" class="run-form" hx-swap-oob="true"' in html  # any earlier error is cleared
    assert "&#34;greeting&#34;: &#34;hi Ann&#34;" in html  # pretty JSON, escaped
    assert "&#34;n&#34;: 2" in html
    assert re.search(r'log-level">log</span>.*?log-message">hello Ann</span>', html, re.S)
    assert re.search(r'log-level">warn</span>.*?log-message">careful</span>', html, re.S)
    assert re.search(
        r'log-time muted" title="\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC, [\d.]+ m?s after the run began">\+\d', html
    )
    assert re.search(r"in \d+(\.\d+)? (ms|s)</span>", html)  # duration
    execution_id = _execution_id(html)
    (row,) = _executions(app, script_id)
    assert str(row.id) == execution_id and row.trigger == "manual" and row.params == {"name": "Ann", "n": 2}

    # The script page lists the run and links to the tenant-wide list filtered to this script.
    page = client.get(f"/scripts/{script_id}").get_data(as_text=True)
    assert f'href="/executions/{execution_id}"' in page
    assert f'href="/executions?script={script_id}">All executions</a>' in page


def test_blank_params_run_with_an_empty_object(app, client, editor_session, make_script, start_worker):
    start_worker()
    script_id = make_script("ed@acme.io", source="function main(event) { return Object.keys(event).length; }")
    html = _run(client, editor_session, script_id, "  ").get_data(as_text=True)
    assert 'data-status="succeeded"' in html and '<pre class="json run-value">0</pre>' in html


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ('{"name": "Ann",}', "Parameters is not valid JSON: Expecting property name enclosed in double quotes"),
        ("{'a': 1}", "Parameters is not valid JSON: Expecting property name"),
        ('{"a": NaN}', "Parameters is not valid JSON: NaN is not valid JSON"),
        ("[1, 2]", "Parameters must be a JSON object such as {&#34;name&#34;: &#34;Ann&#34;}, not an array"),
        ('"text"', "not a string"),
        ("42", "not a number"),
        ("null", "not null"),
    ],
)
def test_invalid_params_are_refused_beside_the_field(app, client, editor_session, make_script, typed, message):
    script_id = make_script("ed@acme.io")
    # Without JavaScript: the script page again, 422, the message beside the field, the text kept.
    response = _run(client, editor_session, script_id, typed, htmx=False)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "<h1>" in page and 'id="run-form"' in page
    assert re.search(r'<textarea id="run-params"[^>]*aria-describedby="run-params-error run-params-hint"', page)
    assert re.search(r'<textarea id="run-params"[^>]*aria-invalid="true"', page)
    error = re.search(r'<p class="field-error" id="run-params-error" role="alert">([^<]*)</p>', page)
    assert error and message in error.group(1), page
    assert f">{typed.replace(chr(34), '&#34;').replace(chr(39), '&#39;')}</textarea>" in page
    # With htmx: the form is swapped in place (htmx only swaps 2xx answers) and the old result cleared.
    response = _run(client, editor_session, script_id, typed)
    assert response.status_code == 200
    assert response.headers["HX-Retarget"] == "#run-form" and response.headers["HX-Reswap"] == "outerHTML"
    html = response.get_data(as_text=True)
    assert html.lstrip().startswith('<form id="run-form"') and message in html
    assert '<div id="run-result" hx-swap-oob="true"></div>' in html
    assert _executions(app, script_id) == []  # nothing was queued


def test_viewer_sees_no_run_panel_and_cannot_run(app, client, make_user, login, make_script):
    make_user("ed@acme.io", "acme", "editor")
    script_id = make_script("ed@acme.io")
    make_user("vi@acme.io", "acme", "viewer")
    csrf = login("vi@acme.io")
    page = client.get(f"/scripts/{script_id}").get_data(as_text=True)
    assert 'id="run-form"' not in page and "run-panel" not in page
    assert _run(client, csrf, script_id, "{}", htmx=False).status_code == 403
    assert _run(client, csrf, script_id, "{}").status_code == 403
    assert _executions(app, script_id) == []
    assert client.get("/executions").status_code == 200  # viewers may read history


def test_disabled_script_cannot_be_run(app, client, editor_session, make_script):
    script_id = make_script("ed@acme.io", status="disabled")
    page = client.get(f"/scripts/{script_id}").get_data(as_text=True)
    assert "This script is disabled. Enable it to run it." in page and 'id="run-form"' not in page
    response = _run(client, editor_session, script_id, "{}", htmx=False)
    assert response.status_code == 409
    assert "This script is disabled: enable it to run it." in response.get_data(as_text=True)
    response = _run(client, editor_session, script_id, "{}")  # e.g. disabled in another tab after the page loaded
    assert response.status_code == 200 and response.headers["HX-Retarget"] == "#run-form"
    assert 'role="alert">This script is disabled: enable it to run it.</p>' in response.get_data(as_text=True)
    assert _executions(app, script_id) == []


def test_queue_unavailable_is_reported(app, client, editor_session, make_script, monkeypatch):
    from webapp.executions import service as executions
    from webapp.executions import views

    def down(*args, **kwargs):
        raise executions.QueueUnavailable("the run could not be queued: Redis is unavailable (ConnectionError)")

    monkeypatch.setattr(views, "start_run", down)
    script_id = make_script("ed@acme.io")
    response = _run(client, editor_session, script_id, "{}", htmx=False)
    assert response.status_code == 503
    message = "The run could not be queued: Redis is unavailable (ConnectionError). Nothing ran; try again in a moment."
    assert message in response.get_data(as_text=True)
    response = _run(client, editor_session, script_id, "{}")
    assert response.status_code == 200 and "Redis is unavailable" in response.get_data(as_text=True)


def test_without_javascript_the_run_redirects_to_its_execution_page(
    app, client, editor_session, make_script, start_worker
):
    start_worker()
    script_id = make_script("ed@acme.io")
    response = _run(client, editor_session, script_id, '{"name": "Bo"}', htmx=False)
    assert response.status_code == 303
    location = response.headers["Location"]
    assert re.fullmatch(r"/executions/[0-9a-f-]{36}", location), location
    page = client.get(location).get_data(as_text=True)
    assert '<h1>Execution <span class="badge succeeded">succeeded</span></h1>' in page
    assert f'<a href="/scripts/{script_id}">' in page
    assert "&#34;greeting&#34;: &#34;hi Bo&#34;" in page  # result
    assert "&#34;name&#34;: &#34;Bo&#34;" in page  # parameters
    assert 'log-message">hello Bo</span>' in page
    assert "<dt>Trigger</dt><dd>manual by ed@acme.io</dd>" in page
    assert f'<a href="/scripts/{script_id}/versions/1">v1</a>' in page
    assert "Compile cache: miss (compiled for this run)" in page and "CPU time:" in page
    assert "http-equiv" not in page and "hx-get" not in page  # finished: the page does not refresh itself

    # The same version again is a compile-cache hit, shown on its page.
    second = _run(client, editor_session, script_id, "{}", htmx=False).headers["Location"]
    assert "Compile cache: <strong>hit</strong>" in client.get(second).get_data(as_text=True)


def test_a_pending_run_long_polls_until_it_has_an_outcome(app, client, editor_session, make_script, start_worker):
    from webapp.executions.service import start_run

    script_id = make_script("ed@acme.io")
    with app.test_request_context():
        script = db.session.get(Script, uuid.UUID(script_id))
        execution_id = str(start_run(script, "manual", {"name": "Cy"}).id)  # no worker yet: stays queued

    partial = client.get(f"/executions/{execution_id}/result?wait=1").get_data(as_text=True)
    assert 'data-status="queued"' in partial and "Waiting for a worker…" in partial
    assert f'hx-get="/executions/{execution_id}/result?wait=10"' in partial
    assert 'hx-trigger="load"' in partial and 'hx-swap="outerHTML"' in partial
    page = client.get(f"/executions/{execution_id}").get_data(as_text=True)
    assert '<noscript><meta http-equiv="refresh" content="5"></noscript>' in page
    assert f'hx-get="/executions/{execution_id}?wait=10"' in page

    start_worker()
    partial = client.get(f"/executions/{execution_id}/result?wait=10").get_data(as_text=True)
    assert 'data-status="succeeded"' in partial and "hx-get" not in partial
    assert "&#34;greeting&#34;: &#34;hi Cy&#34;" in partial
    body = client.get(
        f"/executions/{execution_id}?wait=10", headers={"HX-Request": "true", "HX-Target": "execution-body"}
    )
    html = body.get_data(as_text=True)
    assert html.lstrip().startswith('<div id="execution-body" data-status="succeeded"') and "<html" not in html


def test_a_wait_that_ends_early_makes_the_next_poll_back_off(app, client, editor_session, make_script, monkeypatch):
    """If Redis answers at once without an outcome (e.g. it is unreachable), the browser's
    next long-poll is delayed instead of following immediately."""
    from webapp.executions import views
    from webapp.executions.service import start_run

    script_id = make_script("ed@acme.io")
    with app.test_request_context():
        execution_id = str(start_run(db.session.get(Script, uuid.UUID(script_id)), "manual", {}).id)
    monkeypatch.setattr(views, "wait_for", lambda execution, seconds: execution)
    partial = client.get(f"/executions/{execution_id}/result?wait=10").get_data(as_text=True)
    assert 'hx-trigger="load delay:2s"' in partial
    headers = {"HX-Request": "true", "HX-Target": "execution-body"}
    body = client.get(f"/executions/{execution_id}?wait=10", headers=headers).get_data(as_text=True)
    assert 'hx-trigger="load delay:2s"' in body


def test_a_long_poll_holds_no_database_connection_while_it_waits(app, client, editor_session, make_script):
    """Many open run panels long-poll at once: none may sit on a pooled connection."""
    from redis import Redis

    from webapp.executions.service import start_run

    script_id = make_script("ed@acme.io")
    with app.test_request_context():
        execution_id = str(start_run(db.session.get(Script, uuid.UUID(script_id)), "manual", {}).id)
    redis = Redis.from_url(app.config["SETTINGS"].redis_url)
    answers: list = []
    poll = threading.Thread(target=lambda: answers.append(client.get(f"/executions/{execution_id}/result?wait=3")))
    poll.start()
    try:
        deadline = time.monotonic() + 3
        while not any(c["cmd"] == "xread" and "b" in c["flags"] for c in redis.client_list()):  # blocked now
            assert time.monotonic() < deadline, "the long-poll never blocked on Redis"
            time.sleep(0.02)
        with app.app_context():
            assert db.engine.pool.checkedout() == 0
    finally:
        poll.join(timeout=10)
    assert answers and answers[0].status_code == 200 and 'data-status="queued"' in answers[0].get_data(as_text=True)


def test_error_run_shows_kind_and_line_and_column(client, editor_session, make_script, start_worker):
    start_worker()
    script_id = make_script("ed@acme.io", source="function main(event) {\n  const o = null;\n  return o.field;\n}\n")
    html = _run(client, editor_session, script_id, "{}").get_data(as_text=True)
    assert 'data-status="failed"' in html
    assert "Error: <strong>exception</strong>" in html
    assert "TypeError: cannot read property &#39;field&#39; of null (line 3, column 10)" in html
    page = client.get(f"/executions/{_execution_id(html)}").get_data(as_text=True)
    assert '<h2 id="error-heading">Error: exception</h2>' in page and "(line 3, column 10)" in page


def test_html_in_results_logs_and_errors_is_escaped(client, editor_session, make_script, start_worker):
    start_worker()
    returns = make_script(
        "ed@acme.io", source=f"function main(event) {{ console.log({XSS!r}); return {{ html: {XSS!r} }}; }}"
    )
    throws = make_script("ed@acme.io", source=f"function main(event) {{ throw new Error({XSS!r}); }}")
    for script_id, status in ((returns, "succeeded"), (throws, "failed")):
        html = _run(client, editor_session, script_id, json.dumps({"x": XSS})).get_data(as_text=True)
        assert f'data-status="{status}"' in html
        page = client.get(f"/executions/{_execution_id(html)}").get_data(as_text=True)
        for shown in (html, page):
            assert XSS not in shown and "<img" not in shown
            assert XSS_ESCAPED in shown


@pytest.fixture
def history(app, make_user, login, make_script):
    """25 executions of `alpha` (alternating statuses and triggers) and 3 of `beta` in acme,
    one of `gamma` in globex; the client is logged in as an acme viewer."""
    make_user("ed@acme.io", "acme", "editor")
    make_user("vi@acme.io", "acme", "viewer")
    make_user("spy@globex.io", "globex", "editor")
    ids = {
        "alpha": make_script("ed@acme.io", name="alpha"),
        "beta": make_script("ed@acme.io", name="beta"),
        "gamma": make_script("spy@globex.io", "globex", name="gamma"),
    }
    now = utcnow()
    rows = []
    with app.app_context():
        for name, count in (("alpha", 25), ("beta", 3), ("gamma", 1)):
            script = db.session.get(Script, uuid.UUID(ids[name]))
            for i in range(count):
                status = "succeeded" if i % 2 == 0 or name != "alpha" else "failed"
                rows.append(
                    Execution(
                        id=uuid.uuid4(),
                        tenant_id=script.tenant_id,
                        script_id=script.id,
                        script_version=1,
                        trigger="cron" if name == "alpha" and i % 5 == 0 else "api" if name == "beta" else "manual",
                        status=status,
                        error_kind="exception" if status == "failed" else None,
                        params={},
                        queued_at=now - timedelta(minutes=len(rows)),
                        duration_ms=12.5 if name != "gamma" else 1500.0,
                    )
                )
        db.session.add_all(rows)
        db.session.commit()
        gamma_execution = str(rows[-1].id)
    login("vi@acme.io")
    return ids, gamma_execution


def _rows(html: str) -> list[str]:
    return re.findall(r"<tr>\s*<td><a href=\"/executions/[^\"]+\">.*?</tr>", html, re.S)


def test_executions_list_filters_and_pages(client, history):
    ids, _ = history
    page = client.get("/executions").get_data(as_text=True)
    assert '<a href="/executions" aria-current="page">Executions</a>' in page  # top nav
    assert len(_rows(page)) == 20 and "Page 1 of 2 (28 executions)" in page
    assert 'href="/executions?page=2"' in page
    assert "gamma" not in page  # another tenant's script is neither listed nor offered as a filter
    second = client.get("/executions?page=2").get_data(as_text=True)
    assert len(_rows(second)) == 8 and "Page 2 of 2" in second and 'href="/executions?page=1"' in second

    alpha = client.get(f"/executions?script={ids['alpha']}").get_data(as_text=True)
    assert "(25 executions)" in alpha and f'<option value="{ids["alpha"]}" selected>alpha</option>' in alpha
    assert f"/executions?page=2&amp;script={ids['alpha']}" in alpha  # paging keeps the filter
    assert all(">alpha</a>" in row for row in _rows(alpha))

    failed = client.get("/executions?status=failed").get_data(as_text=True)
    assert "12 executions" in failed and all('badge failed">failed' in r for r in _rows(failed))
    assert all("exception" in r for r in _rows(failed))
    cron = client.get("/executions?trigger=cron").get_data(as_text=True)
    assert "5 executions" in cron and all("<td>cron</td>" in r for r in _rows(cron))
    both = client.get(f"/executions?trigger=api&status=succeeded&script={ids['beta']}").get_data(as_text=True)
    assert "3 executions" in both and all("<td>api</td>" in r and ">beta</a>" in r for r in _rows(both))
    none = client.get(f"/executions?trigger=api&script={ids['alpha']}").get_data(as_text=True)
    assert "No executions match these filters." in none
    # Unknown filter values and another tenant's script match nothing extra; bad paging falls back.
    assert "Page 1 of 2 (28 executions)" in client.get("/executions?status=bogus&trigger=x&page=0").get_data(
        as_text=True
    )
    assert "No executions match" in client.get(f"/executions?script={ids['gamma']}").get_data(as_text=True)
    assert "Page 1 of 2 (28 executions)" in client.get("/executions?script=not-a-uuid").get_data(as_text=True)

    # htmx: only the table is swapped.
    partial = client.get(
        "/executions?status=failed", headers={"HX-Request": "true", "HX-Target": "execution-table"}
    ).get_data(as_text=True)
    assert partial.lstrip().startswith('<div id="execution-table">') and "<html" not in partial
    assert len(_rows(partial)) == 12


def test_another_tenants_execution_is_404(app, client, history):
    _, gamma_execution = history
    assert client.get(f"/executions/{gamma_execution}").status_code == 404
    assert client.get(f"/executions/{gamma_execution}/result?wait=1").status_code == 404
    headers = {"HX-Request": "true", "HX-Target": "execution-body"}
    assert client.get(f"/executions/{gamma_execution}?wait=1", headers=headers).status_code == 404
    assert client.get("/executions/not-a-uuid").status_code == 404
    assert client.get(f"/executions/{uuid.uuid4()}/result").status_code == 404


def test_another_tenants_script_cannot_be_run(app, client, make_user, login, make_script):
    make_user("spy@globex.io", "globex", "admin")
    make_user("ed@acme.io", "acme", "editor")
    script_id = make_script("ed@acme.io")
    csrf = login("spy@globex.io")
    assert _run(client, csrf, script_id, "{}", htmx=False).status_code == 404
    assert _executions(app, script_id) == []


def test_dashboard_links_to_the_execution_page(client, history):
    page = client.get("/").get_data(as_text=True)
    match = re.search(r'href="(/executions/[0-9a-f-]{36})"', page)
    assert match and client.get(match.group(1)).status_code == 200


LONG_URL = "https://api.example.com/" + "v1/orders/" * 30
CALLS = [
    {"method": "POST", "url": "https://api.example.com/v1/orders", "duration_ms": 120, "status": 201, "bytes": 2048},
    {
        "method": "GET",
        "url": "https://hooks.example.com/[secret SLACK_PATH]",
        "duration_ms": 30,
        "status": 404,
        "bytes": 0,
    },
    {"method": "GET", "url": "http://127.0.0.1/admin", "duration_ms": 1, "error": "blocked", "bytes": 0},
    {"method": "GET", "url": LONG_URL, "duration_ms": 10_000, "error": "timeout", "bytes": 0},
]


def _set_calls(app, execution_id: str, calls: list | None) -> None:
    with app.app_context():
        db.session.get(Execution, uuid.UUID(execution_id)).http_calls = calls
        db.session.commit()


def _fetch_rows(html: str) -> list[list[str]]:
    """Each row of the Outbound HTTP table as the text of its cells."""
    table = re.search(r'<table class="stack fetches".*?</table>', html, re.S)
    assert table, html
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(0).split("<tbody>")[1], re.S)
    return [
        [re.sub(r"<[^>]+>|\s+", " ", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)]
        for r in rows
    ]


def test_the_execution_page_lists_the_runs_outbound_calls(app, client, history):
    ids, gamma_execution = history
    with app.app_context():
        execution_id = str(
            db.session.scalar(db.select(Execution.id).where(Execution.script_id == uuid.UUID(ids["beta"])))
        )
    assert "Outbound HTTP" not in client.get(f"/executions/{execution_id}").get_data(as_text=True)
    _set_calls(app, execution_id, [])
    assert "Outbound HTTP" not in client.get(f"/executions/{execution_id}").get_data(as_text=True)

    _set_calls(app, execution_id, CALLS)
    _set_calls(app, gamma_execution, CALLS)
    page = client.get(f"/executions/{execution_id}").get_data(as_text=True)
    assert '<h2 id="fetches-heading">Outbound HTTP</h2>' in page
    assert "4 calls, 2 failed, total 10.15 s" in page
    assert _fetch_rows(page) == [
        ["POST", "https://api.example.com/v1/orders", "201", "120.0 ms", "2.0 KB"],
        ["GET", "https://hooks.example.com/[secret SLACK_PATH]", "404", "30.0 ms", "empty"],
        ["GET", "http://127.0.0.1/admin", "blocked", "1.0 ms", "—"],
        ["GET", LONG_URL, "timed out", "10.00 s", "—"],
    ]
    assert '<span class="badge succeeded">201</span>' in page and '<span class="badge failed">404</span>' in page
    assert '<span class="badge failed">timed out</span>' in page
    # The same section in the body an unfinished run's page swaps in (htmx).
    body = client.get(f"/executions/{execution_id}", headers={"HX-Request": "true", "HX-Target": "execution-body"})
    assert "4 calls, 2 failed" in body.get_data(as_text=True)
    assert client.get(f"/executions/{gamma_execution}").status_code == 404  # another tenant's calls stay theirs


def test_every_fetch_error_kind_reads_in_words(app, client, history):
    ids, _ = history
    with app.app_context():
        execution_id = str(
            db.session.scalar(db.select(Execution.id).where(Execution.script_id == uuid.UUID(ids["beta"])))
        )
    calls = [
        {"method": "GET", "url": "https://x.example/", "duration_ms": 5, "error": kind, "bytes": 0} for kind in KINDS
    ]
    _set_calls(app, execution_id, calls)
    statuses = [row[2] for row in _fetch_rows(client.get(f"/executions/{execution_id}").get_data(as_text=True))]
    assert len(statuses) == len(KINDS) and not [s for s in statuses if "_" in s or s in ("dns", "tls", "timeout")]
    assert "DNS failure" in statuses and "connection failed" in statuses and "redirect refused" in statuses
