"""The fetch examples of docs/scripting.md ("Fetch") run as written, through a real worker:
each script block of the section, with `https://api.example.com` pointed at a loopback
upstream (exempted with FETCH_ALLOWED_NETWORKS, as an operator would exempt an internal API)
and the secrets they read set over the API. Traffic stays on loopback."""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fetch_upstream import Upstream, upstream

DOC = Path(__file__).resolve().parent.parent / "docs" / "scripting.md"
TOKEN = "doc-example-token-4711"


def fetch_scripts() -> list[str]:
    """The ```js blocks of the Fetch section that define `main`, in order."""
    text = DOC.read_text()
    section = text[text.index("\n## Fetch\n") :]
    section = section[: section.index("\n## ", 1)]
    return [block for block in re.findall(r"```js\n(.*?)```", section, re.S) if "function main" in block]


@pytest.fixture
def server() -> Iterator[Upstream]:
    with upstream("127.0.0.1") as s:
        yield s


@pytest.fixture
def run_doc(client, editor, start_worker, run_script, server: Upstream):
    start_worker(FETCH_ALLOWED_NETWORKS="127.0.0.1/32")
    webhook = f"{server.origin}/services/T000/B000/XXXX"
    for name, value in (("API_TOKEN", TOKEN), ("SLACK_WEBHOOK_URL", webhook)):
        assert client.put(f"/api/v1/secrets/{name}", json={"value": value}, headers=editor).status_code == 201

    def run(marker: str) -> dict:
        (source,) = [s for s in fetch_scripts() if marker in s]
        return run_script(editor, source.replace("https://api.example.com", server.origin))

    return run


def test_the_section_has_its_examples():
    assert len(fetch_scripts()) == 6


def test_the_first_example_and_the_json_post_with_a_bearer_token(run_doc, server: Upstream):
    assert run_doc("/users/1")["result"] == {"name": "User 1"}
    posted = run_doc("/orders")
    assert posted["status"] == "succeeded", posted
    echo = posted["result"]
    assert (echo["method"], echo["body"]) == ("POST", '{"sku":"A-100","quantity":1}')
    assert echo["headers"]["Authorization"] == "Bearer [secret API_TOKEN]"  # redacted in the record
    assert posted["http_calls"] == [
        {"method": "POST", "url": f"{server.origin}/orders", "status": 200}
        | {k: posted["http_calls"][0][k] for k in ("duration_ms", "bytes")}
    ]


def test_the_slack_message_records_its_webhook_as_the_secret(run_doc, server: Upstream):
    sent = run_doc("SLACK_WEBHOOK_URL")
    assert sent["result"] == "sent", sent
    assert [(c["method"], c["url"], c["status"]) for c in sent["http_calls"]] == [
        ("POST", "[secret SLACK_WEBHOOK_URL]", 200)
    ]
    assert server.seen == ["POST /services/T000/B000/XXXX"]


def test_the_pagination_loop_follows_next_until_null(run_doc, server: Upstream):
    paged = run_doc("body.next")
    assert paged["result"] == {"count": 6}, paged
    assert server.seen == ["GET /items?per_page=100", "GET /items?page=2", "GET /items?page=3"]
    assert [c["url"] for c in paged["http_calls"]] == [f"{server.origin}/items"] * 3  # no query strings


def test_parallel_calls_and_try_catch(run_doc):
    assert run_doc("Promise.all")["result"] == ["User 1", "User 2", "User 3"]
    assert run_doc("health check failed")["result"] == {"up": True, "status": 200}
