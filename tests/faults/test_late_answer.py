"""An endpoint call whose caller is answered 503 while the database is out of the web
process's reach, and whose answer comes just after: the worker's record must say 503 too
(docs/endpoints.md, "What is recorded").

The web process (the test app, over HTTP) runs with a wall-time limit of 1 s and the worker
with its default of 30 s, so the caller stops waiting after 5 + 1 + 2 s while the script still
awaits a loopback upstream; PostgreSQL is stopped before that, so the web process cannot record
its give-up, and started again before the upstream answers, so the worker can record the call.
"""

import json
import threading
from dataclasses import replace

import pytest
import requests

from tests.fetch_upstream import upstream
from tests.services import PostgresProcess, eventually
from tests.test_endpoint_late_answer import LATE
from tests.test_endpoints import _endpoint
from webapp.config import Settings


@pytest.fixture
def database_url(postgres: PostgresProcess) -> str:
    return postgres.url


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, limits=replace(settings.limits, wall_seconds=1))


def test_a_call_answered_503_with_the_database_away_is_not_recorded_succeeded(
    live_server, client, editor, postgres, start_worker
):
    with upstream() as server:
        start_worker(FETCH_ALLOWED_NETWORKS="127.0.0.1/32", SCRIPT_FETCH_TIMEOUT_SECONDS="30")
        _endpoint(client, editor, "GET", "/late", LATE % json.dumps(f"{server.origin}/slow?ms=60000"))
        answers: list[requests.Response] = []
        caller = threading.Thread(
            target=lambda: answers.append(requests.get(f"{live_server}/api/scripts/late", headers=editor, timeout=30))
        )
        caller.start()
        eventually(lambda: server.seen, 10, "the script's fetch")
        postgres.stop()  # the caller is answered 503 after 8 s; the script waits on
        caller.join(timeout=30)
        assert answers[0].status_code == 503
        postgres.start()
        server.stop.set()  # now the upstream answers, and the script right after
        execution_id = answers[0].json()["error"]["execution_id"]

        def recorded() -> dict | None:
            answer = client.get(f"/api/v1/executions/{execution_id}", headers=editor)
            return answer.get_json() if answer.status_code == 200 else None

        execution = eventually(recorded, 10, "the worker's record of the call")
    assert (execution["status"], execution["error_kind"]) == ("failed", "timeout")
    assert execution["http_summary"]["status"] == 503
    assert [line["message"] for line in execution["logs"]] == ["asking the upstream", "the upstream answered 200"]
