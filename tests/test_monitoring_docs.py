"""The monitoring docs against the real thing.

- docs/alerts.yml passes `promtool check rules` and its unit tests (tests/alerts_test.yml),
  and docs/monitoring.md shows exactly those rules;
- every metric a real /metrics scrape exports is documented in docs/monitoring.md;
- every metric the alert rules and docs/grafana-dashboard.json query is in that scrape, and
  every Grafana query is valid PromQL (promtool parses it as a recording rule).
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import bearer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
ALERTS = DOCS / "alerts.yml"
GRAFANA = DOCS / "grafana-dashboard.json"
PROMETHEUS_OWN = {"up"}  # series Prometheus makes itself for every target
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}


def promtool(*args: str, cwd: Path = ROOT) -> str:
    if shutil.which("promtool") is None:
        raise RuntimeError("promtool is not installed (make test installs Debian's prometheus)")
    result = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\$\w+", " ", expr)  # matchers, ranges, Grafana variables
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)  # label lists
    tokens = re.findall(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()", expr)  # identifiers, not calls
    return set(tokens) - PROMQL_WORDS


def exported_names(scrape: str) -> set[str]:
    """Every name a query may select from this scrape, samples or not (counter X_total, histogram X_bucket …)."""
    names = set()
    for family in text_string_to_metric_families(scrape):
        names |= {sample.name for sample in family.samples}
        names |= {
            "counter": {f"{family.name}_total"},
            "histogram": {f"{family.name}_{part}" for part in ("bucket", "sum", "count")},
        }.get(family.type, {family.name})
    return names


def alert_exprs() -> dict[str, str]:
    """alert name -> expr, read from docs/alerts.yml (plain or `|` block scalars; no YAML library needed)."""
    exprs: dict[str, str] = {}
    lines = ALERTS.read_text().splitlines()
    name = ""
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("- alert:"):
            name = stripped.removeprefix("- alert:").strip()
        elif stripped.startswith("expr:"):
            value = stripped.removeprefix("expr:").strip()
            if value == "|":
                indent = len(line) - len(line.lstrip())
                block = []
                for following in lines[i + 1 :]:
                    if following.strip() and len(following) - len(following.lstrip()) <= indent:
                        break
                    block.append(following.strip())
                value = " ".join(block)
            exprs[name] = value
    return exprs


def grafana_exprs() -> dict[str, str]:
    dashboard = json.loads(GRAFANA.read_text())
    exprs = {}
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            exprs[f"{panel['title']} / {target['refId']}"] = target["expr"]
    return exprs


@pytest.fixture
def scrape(app, client, make_user, make_token, start_worker) -> str:
    """A real scrape after a success, a failure and an endpoint call ran on a worker process."""
    make_user("ed@acme.io", "acme", "editor")
    api = bearer(make_token("ed@acme.io"))
    start_worker()
    for name, source in (("ok", "function main() { return 1 }"), ("bad", "function main() { throw new Error() }")):
        script = client.post("/api/v1/scripts", json={"name": name, "type": "manual", "source": source}, headers=api)
        client.post(f"/api/v1/scripts/{script.get_json()['id']}/run", json={"wait": 20}, headers=api)
    endpoint = {"type": "endpoint", "endpoint_method": "GET", "endpoint_path": "/hi", "name": "hi"}
    client.post("/api/v1/scripts", json={**endpoint, "source": "function main() { return {} }"}, headers=api)
    assert client.get("/api/scripts/hi", headers=api).status_code == 200
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_alert_rules_pass_promtool():
    assert "SUCCESS: 9 rules found" in promtool("check", "rules", str(ALERTS))
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml", cwd=ROOT / "tests")


def test_monitoring_md_shows_the_alert_rules_of_alerts_yml():
    page = (DOCS / "monitoring.md").read_text()
    assert "[docs/alerts.yml](alerts.yml)" in page
    blocks = re.findall(r"```yaml\n(.*?)```", page, re.S)
    rules = ALERTS.read_text()
    shown = [b for b in blocks if b.lstrip().startswith("groups:")]
    assert shown == [rules[rules.index("groups:") :]]


def test_every_exported_metric_is_documented(scrape):
    page = (DOCS / "monitoring.md").read_text()
    families = list(text_string_to_metric_families(scrape))
    assert len(families) == 20  # 16 script and operator families, 4 HTTP ones
    for family in families:
        name = f"{family.name}_total" if family.type == "counter" else family.name
        assert f"`{name}`" in page, f"{name} is exported but not documented in docs/monitoring.md"


def test_alerts_and_grafana_query_only_exported_metrics(scrape):
    exported = exported_names(scrape)
    queries = {**{f"alert {k}": v for k, v in alert_exprs().items()}, **grafana_exprs()}
    assert len(alert_exprs()) == 9 and len(queries) > 25
    for where, expr in queries.items():
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        assert names <= exported | PROMETHEUS_OWN, f"{where}: {names - exported} not in a real scrape"
    grafana_names = set().union(*(metric_names(e) for e in grafana_exprs().values()))
    assert {"script_executions_total", "active_scripts_gauge", "active_vms_gauge"} <= grafana_names
    assert {"flask_http_request_total", "flask_http_request_duration_seconds_bucket"} <= grafana_names


def test_grafana_queries_are_valid_promql(tmp_path):
    dashboard = json.loads(GRAFANA.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    rules = [
        {"record": f"grafana:panel_{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, expr in enumerate(grafana_exprs().values())
    ]
    path = tmp_path / "grafana-queries.yml"
    path.write_text(json.dumps({"groups": [{"name": "grafana", "rules": rules}]}))  # JSON is YAML
    assert f"SUCCESS: {len(rules)} rules found" in promtool("check", "rules", str(path))


def test_metric_names_finds_what_a_query_selects():
    expr = 'sum by (le, url_rule) (rate(x_bucket{a="b(c)", d=~"e.*"}[5m])) / on (job) y_total offset 5m > 0.5'
    assert metric_names(expr) == {"x_bucket", "y_total"}
    assert metric_names("max without (instance) (script_workers) == 0 and up") == {"script_workers", "up"}
    assert metric_names("histogram_quantile(0.95, sum by (le) (rate(h_bucket[$__rate_interval])))") == {"h_bucket"}
