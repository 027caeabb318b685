"""Hostile text a tenant member can put on our pages: a script's name, description and
source, a run's parameters, logs, result and error message."""

import re
from dataclasses import dataclass

from flask.testing import FlaskClient

NAME = "<script>alert('name')</script>"
DESCRIPTION = "\"><img src=x onerror=alert('description')>"
SOURCE = """// </textarea></script><script>alert('source')</script>
async function main(event) {
  console.log("<script>alert('log')</script>", "\\"><img src=x onerror=alert('log2')>");
  console.warn("javascript:alert('log3')");
  if (event.fail) throw new Error("<svg onload=alert('error')>");
  return { html: "<img src=x onerror=alert('result')>", url: "javascript:alert('result2')", param: event.p };
}
"""
PARAMS = {"p": "<script>alert('param')</script>"}
# Raw markup that must never reach a page: any of these would run in a browser.
RAW = re.compile(r"<script>alert|<img src=x|<svg onload|href=\"javascript:|</textarea></script>", re.IGNORECASE)


@dataclass
class Hostile:
    script_id: str
    succeeded_id: str
    failed_id: str

    def pages(self) -> list[str]:
        s = self.script_id
        return [
            "/",
            "/scripts",
            "/scripts?q=script",
            f"/scripts/{s}",
            f"/scripts/{s}/edit",
            f"/scripts/{s}/versions",
            f"/scripts/{s}/versions/1",
            f"/scripts/{s}/delete",
            "/executions",
            f"/executions?script={s}",
            f"/executions/{self.succeeded_id}",
            f"/executions/{self.failed_id}",
            f"/executions/{self.succeeded_id}/result",  # the run panel's partial
            f"/executions/{self.failed_id}/result",
        ]


def make_hostile(client: FlaskClient, headers: dict[str, str]) -> Hostile:
    """The hostile script, run once to success and once to failure (needs a worker)."""
    body = {"name": NAME, "description": DESCRIPTION, "type": "manual", "source": SOURCE}
    created = client.post("/api/v1/scripts", json=body, headers=headers)
    assert created.status_code == 201, created.get_json()
    script_id = created.get_json()["id"]
    runs = []
    for params in (PARAMS, {**PARAMS, "fail": True}):
        response = client.post(f"/api/v1/scripts/{script_id}/run", json={"params": params, "wait": 20}, headers=headers)
        assert response.status_code == 200, response.get_json()
        runs.append(response.get_json())
    assert runs[0]["status"] == "succeeded" and runs[1]["error_kind"] == "exception", runs
    return Hostile(script_id, runs[0]["id"], runs[1]["id"])
