"""`fetch()` through a real worker (docs/scripting.md, "Fetch"): a secret sent as a Bearer
header and kept out of the record, what the execution keeps of each call, the tenant's
allowlist, an endpoint that fetches, and a worker that stays flat and serving after limits.

Traffic stays on loopback: the worker exempts 127.0.0.1 (FETCH_ALLOWED_NETWORKS).
"""

from collections.abc import Iterator

import pytest
import requests

from tests.fetch_upstream import Upstream, upstream
from tests.services import eventually
from tests.test_endpoints import _endpoint

pytestmark = pytest.mark.slow
EXEMPT = {"FETCH_ALLOWED_NETWORKS": "127.0.0.1/32"}
TOKEN = "tok_live_8f14e45fceea167a5a36dedd4bea2543"


@pytest.fixture
def server() -> Iterator[Upstream]:
    with upstream("127.0.0.1") as s:
        yield s


def test_a_secret_sent_as_bearer_is_kept_out_of_the_record(client, editor, start_worker, run_script, server):
    start_worker(**EXEMPT)
    client.put("/api/v1/secrets/API_TOKEN", json={"value": TOKEN}, headers=editor)
    client.put(
        "/api/v1/secrets/HOOK_URL", json={"value": f"{server.origin}/hooks/T0/B0/xyzzy-hook?k=v"}, headers=editor
    )
    execution = run_script(
        editor,
        """async function main(event) {
          const token = await secrets.get('API_TOKEN');
          const r = await fetch(event.url + '/echo?page=2', {
            method: 'POST', headers: {Authorization: 'Bearer ' + token, 'Content-Type': 'application/json'},
            body: JSON.stringify({n: 1}),
          });
          const seen = await r.json();
          const hook = await fetch(await secrets.get('HOOK_URL'), {method: 'POST', body: 'hi'});
          console.log('sent with', seen.headers.Authorization);
          return {auth: seen.headers.Authorization, hook: hook.status};
        }""",
        {"url": server.origin},
    )
    assert execution["status"] == "succeeded", execution
    assert execution["result"] == {"auth": "Bearer [secret API_TOKEN]", "hook": 200}
    assert execution["secrets_read"] == ["API_TOKEN", "HOOK_URL"]
    calls = execution["http_calls"]
    assert [(c["method"], c["url"], c["status"]) for c in calls] == [
        ("POST", f"{server.origin}/echo", 200),
        ("POST", "[secret HOOK_URL]", 200),
    ]
    assert all(c["bytes"] > 0 and c["duration_ms"] >= 0 for c in calls)
    assert TOKEN not in str(execution) and "xyzzy" not in str(execution) and "page=2" not in str(execution)
    assert server.seen[0] == "POST /echo?page=2"  # the upstream got the real request


def test_the_tenants_allowlist_holds_in_the_worker(client, admin, start_worker, run_script, server):
    start_worker(**EXEMPT)
    source = """async function main(e) {
      try { return (await fetch(e.url)).status; } catch (err) { return err.message; }
    }"""
    assert run_script(admin, source, {"url": f"{server.origin}/echo"})["result"] == 200
    saved = client.patch("/api/v1/settings", json={"fetch_allowed_hosts": ["api.example.com"]}, headers=admin)
    assert saved.status_code == 200, saved.get_json()
    refused = run_script(admin, source, {"url": f"{server.origin}/echo"})
    assert refused["result"] == "fetch: host 127.0.0.1 is not on this tenant's list of allowed hosts"
    assert refused["http_calls"][0]["error"] == "blocked"
    assert server.seen == ["GET /echo"]  # the refused call never connected


def test_an_endpoint_answers_with_what_it_fetched(live_server, client, editor, start_worker, server):
    start_worker(**EXEMPT)
    created = client.post(
        "/api/v1/scripts",
        json={
            "name": "proxy",
            "type": "endpoint",
            "endpoint_method": "GET",
            "endpoint_path": "/proxy",
            "source": """async function main(req) {
              const [a, b] = await Promise.all([fetch(req.query.to + '/echo?i=1'), fetch(req.query.to + '/echo?i=2')]);
              return {status: 200, body: {paths: [(await a.json()).path, (await b.json()).path]}};
            }""",
        },
        headers=editor,
    )
    assert created.status_code == 201, created.get_json()
    answer = requests.get(f"{live_server}/api/scripts/proxy", params={"to": server.origin}, headers=editor, timeout=30)
    assert answer.status_code == 200, answer.text
    assert sorted(answer.json()["paths"]) == ["/echo?i=1", "/echo?i=2"]
    listing = f"/api/v1/scripts/{created.get_json()['id']}/executions"
    execution = eventually(lambda: client.get(listing, headers=editor).get_json()["items"], 10, "the call recorded")[0]
    assert [c["url"] for c in execution["http_calls"]] == [f"{server.origin}/echo"] * 2


def test_an_endpoints_fetches_follow_a_changed_allowlist_at_the_next_call(
    live_server, client, admin, start_worker, server
):
    """An endpoint call carries its tenant's allowlist from the web process (no query in the
    worker): a list saved a moment ago holds at the very next call of a cached caller."""
    start_worker(**EXEMPT)
    probe = """async function main(req) {
      try { return {status: 200, body: String((await fetch(req.query.to + '/echo')).status)}; }
      catch (err) { return {status: 200, body: err.message}; }
    }"""
    _endpoint(client, admin, "GET", "/probe", probe)

    def call() -> str:
        answer = requests.get(
            f"{live_server}/api/scripts/probe", params={"to": server.origin}, headers=admin, timeout=30
        )
        assert answer.status_code == 200, answer.text
        return answer.text

    assert call() == "200"
    saved = client.patch("/api/v1/settings", json={"fetch_allowed_hosts": ["api.example.com"]}, headers=admin)
    assert saved.status_code == 200, saved.get_json()
    assert call() == "fetch: host 127.0.0.1 is not on this tenant's list of allowed hosts"
    cleared = client.patch("/api/v1/settings", json={"fetch_allowed_hosts": None}, headers=admin)
    assert cleared.status_code == 200, cleared.get_json()
    assert call() == "200"
    assert server.seen == ["GET /echo", "GET /echo"]


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_a_huge_answer_leaves_the_worker_flat_and_serving(client, editor, start_worker, run_script, server):
    """1 GiB offered, five times: the worker reads no more than the cap each time."""
    worker = start_worker(**EXEMPT)
    source = """async function main(e) {
      try { await fetch(e.url); return 'read'; } catch (err) { return err.message; }
    }"""
    first = run_script(editor, source, {"url": f"{server.origin}/big"})
    assert first["result"] == "fetch: the answer of 127.0.0.1 is over the limit of 5120 KiB"
    before = _rss_kib(worker.proc.pid)
    for _ in range(4):
        again = run_script.again(editor, first["script_id"], {"url": f"{server.origin}/big"})
        assert again["result"] == first["result"]
    assert _rss_kib(worker.proc.pid) - before < 32 * 1024
    assert server.sent < 64 * 1024 * 1024  # the upstream was cut off near the cap, five times
    normal = run_script(editor, "async function main(e) { return (await fetch(e.url)).status }", {"url": server.origin})
    assert normal["result"] == 200


def test_a_secret_in_a_url_the_platform_or_the_script_encoded_is_kept_out_of_the_record(
    client, editor, start_worker, run_script, server
):
    """The record keeps the URL as sent (%-encoded, fragment dropped), not as the secret was
    written: the value is looked for in that form too."""
    start_worker(**EXEMPT)
    client.put("/api/v1/secrets/KEY", json={"value": "k3y/xyzzy+plugh=="}, headers=editor)
    client.put("/api/v1/secrets/HOOK_URL", json={"value": f"{server.origin}/hooks/xyzzy-höök#top"}, headers=editor)
    execution = run_script(
        editor,
        """async function main(e) {
          const key = await secrets.get('KEY');
          const a = await fetch(e.url + '/keys/' + encodeURIComponent(key));
          const b = await fetch(await secrets.get('HOOK_URL'), {method: 'POST', body: 'hi'});
          await (await fetch(e.url + '/echo?k=' + encodeURIComponent(key))).json();
          const manual = await fetch(e.url + '/redirect?to=/x&k=' + encodeURIComponent(key), {redirect: 'manual'});
          await manual.json();  // "moved": not JSON, and the error names the URL
        }""",
        {"url": server.origin},
    )
    assert [c["url"] for c in execution["http_calls"]] == [
        f"{server.origin}/keys/[secret KEY]",
        "[secret HOOK_URL]",
        f"{server.origin}/echo",
        f"{server.origin}/redirect",
    ]
    assert execution["error_message"].startswith("SyntaxError: Response.json: the answer from "), execution
    for encoded in ("xyzzy", "h%C3%B6%C3%B6k"):
        assert encoded not in str(execution)
