"""An endpoint call whose answer comes just after its caller was answered 503: the record
says what the caller saw, and keeps the script's logs (docs/endpoints.md, "What is recorded").

The web process (the test app, over HTTP) runs with a wall-time limit of 1 s and the workers
with their default of 30 s, so a caller stops waiting after 5 + 1 + 2 s while the script still
awaits a loopback upstream; the test lets the upstream answer only once the callers have their
503. One call's script succeeds then, the other's throws (a failed call's row is written before
its answer is handed back).
"""

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
import requests

from tests.fetch_upstream import upstream
from tests.services import eventually
from tests.test_endpoints import _endpoint
from webapp.config import Settings

LATE = """async function main(req) {
  console.log('asking the upstream');
  const answer = await fetch(%s);
  console.log('the upstream answered ' + answer.status);
  if (req.query.fail) throw new Error('too late');
  return { body: 'too late' };
}"""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    limits, tenants = replace(settings.limits, wall_seconds=1), replace(settings.tenants, max_runs=2)
    return replace(settings, limits=limits, tenants=tenants)


def test_answers_that_come_after_the_callers_503_are_recorded_as_the_callers_saw_them(
    live_server, client, editor, start_worker
):
    with upstream() as server:
        for _ in range(2):  # one for each call
            start_worker(FETCH_ALLOWED_NETWORKS="127.0.0.1/32", SCRIPT_FETCH_TIMEOUT_SECONDS="30")
        _endpoint(client, editor, "GET", "/late", LATE % json.dumps(f"{server.origin}/slow?ms=60000"))
        with ThreadPoolExecutor(2) as callers:
            answers = list(
                callers.map(
                    lambda query: requests.get(f"{live_server}/api/scripts/late{query}", headers=editor, timeout=30),
                    ["", "?fail=1"],
                )
            )
        assert [a.status_code for a in answers] == [503, 503]
        assert {a.json()["error"]["code"] for a in answers} == {"unavailable"}
        assert server.seen == ["GET /slow?ms=60000"] * 2  # the scripts are still waiting for it
        server.stop.set()  # now the upstream answers, and the scripts right after

        def recorded_by_the_worker(answer: requests.Response) -> dict | None:
            execution_id = answer.json()["error"]["execution_id"]
            execution = client.get(f"/api/v1/executions/{execution_id}", headers=editor).get_json()
            return execution if execution["worker"] else None

        executions = [eventually(lambda a=a: recorded_by_the_worker(a), 10, "the worker's record") for a in answers]
    for execution in executions:
        assert (execution["status"], execution["error_kind"]) == ("failed", "timeout")
        assert execution["http_summary"]["status"] == 503
        assert "the caller was answered 503" in execution["error_message"]
    assert [line["message"] for line in executions[0]["logs"]] == ["asking the upstream", "the upstream answered 200"]
    assert executions[0]["error_message"].endswith("the run itself succeeded")
    assert "the run itself failed (exception: Error: too late (line 5" in executions[1]["error_message"]
    assert [line["message"] for line in executions[1]["logs"]] == ["asking the upstream", "the upstream answered 200"]
