"""Endpoint scripts served under /api/scripts/*, over real HTTP, with a real worker."""

import time

import pytest
import requests

from tests.conftest import bearer
from tests.services import eventually

ECHO = """
function main(req) {
  return { status: 200, body: { method: req.method, path: req.path, params: req.params, query: req.query,
    json: req.json, body: req.body, contentType: req.headers['content-type'] ?? null,
    auth: req.headers.authorization ?? null, cookie: req.headers.cookie ?? null, ip: req.ip } };
}
"""


@pytest.fixture
def tenant_a(make_user, make_token) -> dict[str, str]:
    make_user("ed@acme.io", "acme", "editor")
    return bearer(make_token("ed@acme.io"))


def _endpoint(client, headers, method: str, path: str, source: str, name: str | None = None, **fields) -> dict:
    body = {
        "name": name or f"{method} {path}",
        "type": "endpoint",
        "endpoint_method": method,
        "endpoint_path": path,
        "source": source,
        **fields,
    }
    response = client.post("/api/v1/scripts", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_hello_over_http(live_server, client, tenant_a, start_worker):
    start_worker()
    _endpoint(client, tenant_a, "GET", "/hello", "function main() { return { body: { greeting: 'hello' } } }")
    response = requests.get(f"{live_server}/api/scripts/hello", headers=tenant_a, timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"greeting": "hello"}


def test_no_route_is_404_and_no_caller_is_401(live_server, client, tenant_a, start_worker):
    start_worker()
    _endpoint(client, tenant_a, "GET", "/hello", "function main() { return { body: 'hi' } }")
    missing = requests.get(f"{live_server}/api/scripts/nope", headers=tenant_a, timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    anonymous = requests.get(f"{live_server}/api/scripts/hello", timeout=30)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == "Bearer"
    assert anonymous.json() == {
        "error": {
            "code": "unauthorized",
            "execution_id": None,
            "message": "log in or send Authorization: Bearer <token>",
        }
    }


def test_the_request_event(live_server, client, tenant_a, start_worker):
    start_worker()
    _endpoint(client, tenant_a, "POST", "/orders/{id}/items/{item}", ECHO)
    response = requests.post(
        f"{live_server}/api/scripts/orders/42/items/7?tag=a&tag=b&one=1",
        json={"qty": 3},
        headers={**tenant_a, "Cookie": "x=1"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    event = response.json()
    assert event["method"] == "POST" and event["path"] == "/orders/42/items/7"
    assert event["params"] == {"id": "42", "item": "7"}
    assert event["query"] == {"tag": ["a", "b"], "one": "1"}
    assert event["json"] == {"qty": 3} and event["body"] == '{"qty": 3}'
    assert event["contentType"] == "application/json"
    assert event["auth"] is None and event["cookie"] is None  # the caller's credentials stay with us
    assert event["ip"] == "127.0.0.1"
    text = requests.post(
        f"{live_server}/api/scripts/orders/1/items/2",
        data="plain words",
        headers={**tenant_a, "Content-Type": "text/plain"},
        timeout=30,
    ).json()
    assert text["body"] == "plain words" and text["json"] is None


def test_status_headers_and_body_kinds(live_server, client, tenant_a, start_worker):
    start_worker()
    source = """
function main(req) {
  const kind = req.query.kind;
  if (kind === 'text') return { status: 202, headers: { 'X-Custom': 'yes', 'Connection': 'close',
      'Content-Length': '999', 'Set-Cookie': 'sid=1; Path=/' }, body: 'plain' };
  if (kind === 'json-string') return { body: 'a string is sent as is' };
  if (kind === 'array') return { status: 201, body: [1, 2] };
  if (kind === 'html') return { headers: { 'Content-Type': 'text/html' }, body: '<b>hi</b>' };
  if (kind === 'cookie') return { headers: { 'Set-Cookie': 'pref=dark; Path=/api/scripts/kinds' }, body: 'ok' };
  if (kind === 'sneaky-cookie') return { headers: { 'Set-Cookie': 't=1; Path=/api/scripts/x; Path=/' }, body: 'ok' };
  if (kind === 'own-csp') return { headers: { 'Content-Security-Policy': "script-src 'unsafe-inline'" }, body: 'x' };
  if (kind === 'bad-header') return { headers: { 'X A': 'b' }, body: 'x' };
  if (kind === 'status-101') return { status: 101 };
  return {};
}
"""
    _endpoint(client, tenant_a, "GET", "/kinds", source)
    get = lambda kind: requests.get(f"{live_server}/api/scripts/kinds?kind={kind}", headers=tenant_a, timeout=30)  # noqa: E731
    text = get("text")
    assert text.status_code == 202 and text.text == "plain"
    assert text.headers["Content-Type"] == "text/plain; charset=utf-8" and text.headers["X-Custom"] == "yes"
    assert text.headers["Content-Length"] == "5" and "Set-Cookie" not in text.headers  # dropped
    assert get("json-string").text == "a string is sent as is"
    array = get("array")
    assert array.status_code == 201 and array.json() == [1, 2] and array.headers["Content-Type"] == "application/json"
    html = get("html")
    assert html.headers["Content-Type"].startswith("text/html")
    # Script output never runs code on the platform's origin.
    assert html.headers["Content-Security-Policy"] == "sandbox; default-src 'none'; frame-ancestors 'none'"
    assert html.headers["X-Content-Type-Options"] == "nosniff"
    # Every tenant's endpoints share /api/scripts/*, and scripts never see cookies: a cookie set
    # by one tenant's script would only weigh on calls to another's (or push out the session).
    assert "Set-Cookie" not in get("cookie").headers
    assert "Set-Cookie" not in get("sneaky-cookie").headers
    assert get("own-csp").headers["Content-Security-Policy"].startswith("sandbox")
    bad_header = get("bad-header")
    assert bad_header.status_code == 502 and "not a valid HTTP header name" in bad_header.json()["error"]["message"]
    assert get("status-101").status_code == 502
    empty = get("none")
    assert empty.status_code == 200 and empty.text == ""


def test_literal_segments_win_and_405_lists_allowed_methods(live_server, client, tenant_a, start_worker):
    start_worker()
    _endpoint(client, tenant_a, "GET", "/users/{id}", "function main(r) { return { body: 'by id ' + r.params.id } }")
    _endpoint(client, tenant_a, "GET", "/users/me", "function main() { return { body: 'me' } }")
    _endpoint(client, tenant_a, "DELETE", "/users/{id}", "function main() { return { status: 204 } }")
    assert requests.get(f"{live_server}/api/scripts/users/me", headers=tenant_a, timeout=30).text == "me"
    assert requests.get(f"{live_server}/api/scripts/users/7", headers=tenant_a, timeout=30).text == "by id 7"
    wrong = requests.put(f"{live_server}/api/scripts/users/7", headers=tenant_a, timeout=30)
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "DELETE, GET"


def test_failures_map_to_statuses(live_server, client, tenant_a, start_worker):
    start_worker()
    _endpoint(client, tenant_a, "GET", "/boom", "function main() { throw new Error('broken') }")
    _endpoint(client, tenant_a, "GET", "/bad", "function main() { return 'not an object' }")
    _endpoint(
        client,
        tenant_a,
        "GET",
        "/loop",
        "function main() { while (true) {} }",
        limits={"wall_seconds": 2, "cpu_seconds": 5},
    )
    _endpoint(client, tenant_a, "POST", "/upload", "function main(r) { return { body: r.body.length } }")
    boom = requests.get(f"{live_server}/api/scripts/boom", headers=tenant_a, timeout=30)
    assert boom.status_code == 500 and boom.json()["error"]["code"] == "script_error"
    assert boom.json()["error"]["message"].startswith("Error: broken (line 1")
    execution = client.get(f"/api/v1/executions/{boom.json()['error']['execution_id']}", headers=tenant_a).get_json()
    assert execution["error_kind"] == "exception"
    bad = requests.get(f"{live_server}/api/scripts/bad", headers=tenant_a, timeout=30)
    assert bad.status_code == 502 and bad.json()["error"]["code"] == "bad_response"
    assert "must return an object like {status, headers, body}, got a string" in bad.json()["error"]["message"]
    started = time.monotonic()
    loop = requests.get(f"{live_server}/api/scripts/loop", headers=tenant_a, timeout=30)
    assert loop.status_code == 504 and loop.json()["error"]["code"] == "timeout"
    assert time.monotonic() - started < 6
    big = requests.post(f"{live_server}/api/scripts/upload", data="x" * (1024 * 1024 + 1), headers=tenant_a, timeout=30)
    assert big.status_code == 413
    ok = requests.post(f"{live_server}/api/scripts/upload", data="x" * 1000, headers=tenant_a, timeout=30)
    assert ok.status_code == 200 and ok.json() == 1000


@pytest.mark.slow  # waits out QUEUE_WAIT_SECONDS
def test_no_worker_is_503_with_retry_after(live_server, client, tenant_a):
    _endpoint(client, tenant_a, "GET", "/hello", "function main() { return { body: 'hi' } }")
    response = requests.get(f"{live_server}/api/scripts/hello", headers=tenant_a, timeout=30)
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    error = response.json()["error"]
    assert error["code"] == "unavailable" and error["message"] == "no worker took the call within 5 s"
    execution = client.get(f"/api/v1/executions/{error['execution_id']}", headers=tenant_a).get_json()
    assert execution["status"] == "failed" and execution["error_kind"] == "lost"


def test_tenants_get_their_own_route(live_server, client, make_user, make_token, start_worker):
    start_worker()
    make_user("a@acme.io", "acme", "editor")
    make_user("b@globex.io", "globex", "editor")
    a, b = bearer(make_token("a@acme.io", "acme")), bearer(make_token("b@globex.io", "globex"))
    _endpoint(client, a, "GET", "/hello", "function main() { return { body: 'acme' } }")
    _endpoint(client, b, "GET", "/hello", "function main() { return { body: 'globex' } }")
    _endpoint(client, a, "GET", "/only-acme", "function main() { return { body: 'secret' } }")
    assert requests.get(f"{live_server}/api/scripts/hello", headers=a, timeout=30).text == "acme"
    assert requests.get(f"{live_server}/api/scripts/hello", headers=b, timeout=30).text == "globex"
    assert requests.get(f"{live_server}/api/scripts/only-acme", headers=b, timeout=30).status_code == 404


def test_roles_revoked_tokens_and_non_members(live_server, client, app, make_user, make_token, start_worker, tenant_a):
    start_worker()
    _endpoint(client, tenant_a, "GET", "/hello", "function main() { return { body: 'hi' } }")
    make_user("v@acme.io", "acme", "viewer")
    viewer = bearer(make_token("v@acme.io", "acme"))
    assert requests.get(f"{live_server}/api/scripts/hello", headers=viewer, timeout=30).text == "hi"
    make_user("out@other.io", "other", "admin")
    outsider = bearer(make_token("out@other.io", "other"))
    assert requests.get(f"{live_server}/api/scripts/hello", headers=outsider, timeout=30).status_code == 404
    from webapp.auth.tokens import digest, revoke
    from webapp.extensions import db
    from webapp.models import ApiToken

    with app.app_context():
        revoke(db.session.scalar(db.select(ApiToken).where(ApiToken.token_hash == digest(viewer["Authorization"][7:]))))
    assert requests.get(f"{live_server}/api/scripts/hello", headers=viewer, timeout=30).status_code == 401


def test_session_callers_need_csrf_for_unsafe_methods(live_server, client, make_user, login, start_worker):
    start_worker()
    make_user("ed@acme.io", "acme", "editor")
    csrf = login("ed@acme.io")
    client.post(
        "/api/v1/scripts",
        headers={"X-CSRFToken": csrf},
        json={
            "name": "p",
            "type": "endpoint",
            "endpoint_method": "POST",
            "endpoint_path": "/p",
            "source": "function main() { return { body: 'posted' } }",
        },
    )
    client.post(
        "/api/v1/scripts",
        headers={"X-CSRFToken": csrf},
        json={
            "name": "g",
            "type": "endpoint",
            "endpoint_method": "GET",
            "endpoint_path": "/g",
            "source": "function main() { return { body: 'got' } }",
        },
    )
    assert client.get("/api/scripts/g").get_data(as_text=True) == "got"
    assert client.post("/api/scripts/p").status_code == 400
    assert client.post("/api/scripts/p", headers={"X-CSRFToken": csrf}).get_data(as_text=True) == "posted"


COUNT_CALLS = """
async function main() {
  const calls = ((await storage.get('calls')) ?? 0) + 1;
  await storage.set('calls', calls);
  return { body: String(calls) };
}
"""


def test_session_calls_from_another_site_are_refused_and_never_run(
    live_server, client, make_user, make_token, login, start_worker
):
    start_worker()
    make_user("ed@acme.io", "acme", "editor")
    token = bearer(make_token("ed@acme.io"))
    _endpoint(client, token, "GET", "/count", COUNT_CALLS)
    login("ed@acme.io")
    # A page on another site navigates the user's browser here: their session cookie comes along.
    refused = client.get("/api/scripts/count", headers={"Sec-Fetch-Site": "cross-site"})
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "cross_site"
    assert refused.get_json()["error"]["execution_id"] is None
    # Our own pages, same-site ones, the address bar and older browsers: the count shows that
    # the refused call never ran.
    for calls, site in enumerate((None, "same-origin", "same-site", "none"), start=1):
        headers = {"Sec-Fetch-Site": site} if site else {}
        answer = client.get("/api/scripts/count", headers=headers)
        assert answer.status_code == 200 and answer.get_data(as_text=True) == str(calls), site
    # A token is never sent by a browser on its own: a token call is served whatever the site.
    from_elsewhere = requests.get(
        f"{live_server}/api/scripts/count", headers={**token, "Sec-Fetch-Site": "cross-site"}, timeout=30
    )
    assert from_elsewhere.status_code == 200 and from_elsewhere.text == "5"


def test_records_summarise_and_never_keep_bodies(live_server, client, tenant_a, start_worker):
    start_worker()
    script = _endpoint(
        client, tenant_a, "POST", "/secret", "function main(r) { return { status: 201, body: 'response-secret' } }"
    )
    requests.post(f"{live_server}/api/scripts/secret", data="request-secret", headers=tenant_a, timeout=30)
    url = f"/api/v1/scripts/{script['id']}/executions"
    # A successful call is recorded just after it is answered.
    eventually(lambda: client.get(url, headers=tenant_a).get_json()["total"] == 1, what="the call recorded")
    listing = client.get(url, headers=tenant_a).get_data(as_text=True)
    assert "request-secret" not in listing and "response-secret" not in listing
    assert tenant_a["Authorization"][7:] not in listing
    from webapp.extensions import db
    from webapp.models import Execution

    with client.application.app_context():
        row = db.session.scalar(db.select(Execution))
        assert row.http_summary == {
            "method": "POST",
            "path": "/secret",
            "query": [],
            "request_bytes": 14,
            "request_type": None,  # the caller sent none
            "status": 201,
            "response_bytes": 15,
            "response_type": "text/plain; charset=utf-8",
        }
        assert row.params is None and row.result is None and row.trigger == "endpoint"


def test_route_changes_reach_other_web_processes(live_server, client, tenant_a, start_worker, settings):
    """A second app (another web process) sees a new route at once, and a removed one goes."""
    from webapp.app import create_app

    start_worker()
    other_app = create_app(settings)
    other = other_app.test_client()
    assert other.get("/api/scripts/fresh", headers=tenant_a).status_code == 404
    other_app.extensions["endpoint_router"]._last_miss_reload = time.monotonic() + 3600  # only the version tells
    script = _endpoint(client, tenant_a, "GET", "/fresh", "function main() { return { body: 'new' } }")
    assert other.get("/api/scripts/fresh", headers=tenant_a).get_data(as_text=True) == "new"
    client.patch(f"/api/v1/scripts/{script['id']}", json={"status": "disabled"}, headers=tenant_a)
    assert other.get("/api/scripts/fresh", headers=tenant_a).status_code == 404


def test_head_runs_the_get_script_without_a_body(live_server, client, tenant_a, start_worker):
    start_worker()
    _endpoint(
        client,
        tenant_a,
        "GET",
        "/hello",
        "function main(r) { return { headers: { 'X-Method': r.method }, body: 'hi' } }",
    )
    head = requests.head(f"{live_server}/api/scripts/hello", headers=tenant_a, timeout=30)
    assert head.status_code == 200 and head.headers["X-Method"] == "HEAD" and head.text == ""


def test_a_moved_route_leaves_its_old_path_within_a_second(client, tenant_a, start_worker, settings, redis_url):
    """Even when the route-change announcement is lost (the database fingerprint tells)."""
    from redis import Redis

    from webapp.app import create_app

    start_worker()
    script = _endpoint(client, tenant_a, "GET", "/old", "function main() { return { body: 'moved' } }")
    other = create_app(settings).test_client()
    assert other.get("/api/scripts/old", headers=tenant_a).get_data(as_text=True) == "moved"
    version = Redis.from_url(redis_url).get("sr:routes:version")
    client.patch(f"/api/v1/scripts/{script['id']}", json={"endpoint_path": "/new"}, headers=tenant_a)
    Redis.from_url(redis_url).set("sr:routes:version", version)  # the announcement is lost
    # A second, with room for the calls that run meanwhile on a busy machine.
    eventually(lambda: other.get("/api/scripts/old", headers=tenant_a).status_code == 404, 2, "the old path gone")
    assert other.get("/api/scripts/new", headers=tenant_a).get_data(as_text=True) == "moved"
