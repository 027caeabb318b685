"""Every page at phone width (390 px), as an admin with a tenant full of realistic data: none is
wider than the screen, so no button (Revoke, Remove, Save) sits off to the side. The pages come
from the URL map, so a new page has to be listed here (or among the partials) to pass."""

import uuid
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import quote

from flask import Flask
from playwright.sync_api import Page, expect

from tests.storage import store
from webapp.auth.tokens import create_token
from webapp.extensions import db
from webapp.invitations import service as invitations
from webapp.models import AuditEntry, Execution, Tenant, User, utcnow
from webapp.scripts import service
from webapp.secret_store import service as secret_store

ADMIN = "operations.lead@acme-industries.example"
MEMBERS = ("ci.deployer@acme-industries.example", "night.shift.support@acme-industries.example")
# htmx fragments, seen inside the pages that load them; not pages of their own.
PARTIALS = {
    "scripts.trigger_fields",
    "scripts.cron_preview",
    "executions.result",
    "scripts.latest",
    "scripts.schedule",
    "drafts.unsaved_result",
}
# Not HTML pages for people.
NOT_PAGES = {"static", "health.healthz", "metrics.metrics", "endpoints.serve", "audit.export"}
SOURCE = """async function main(event) {
  const orders = await storage.get("orders-awaiting-the-nightly-reconciliation-report") || [];
  console.log("reconciling", orders.length, "orders for", event.params && event.params.region);
  return { reconciled: orders.length, region: "eu-west-1-frankfurt-availability-zone-b" };
}
"""
LONG_RESULT = {"reconciled": 1284, "note": "x" * 160, "regions": ["eu-west-1", "us-east-2"] * 8}
# A storage key as long as keys may be (200 characters), with nowhere a line may break, and a
# large value with long unbroken strings and deep indentation.
LONG_KEY = ("reconciliation_eu_west_1." + "orders_awaiting_the_nightly_report_" * 6)[:200]
LARGE_VALUE = {"orders": [{"id": f"order-{n:06}", "payload": {"lines": [{"sku": "s" * 120}]}} for n in range(300)]}
# A run's fetch() calls, one to a 300-character URL with nowhere a line may break.
LONG_URL = ("https://api.payments-provider-for-the-eu-marketplace.example/v1/" + "reconciliation_orders_" * 14)[:300]
HTTP_CALLS = [
    {"method": "POST", "url": LONG_URL, "duration_ms": 1_284, "status": 503, "bytes": 18_432},
    {
        "method": "OPTIONS",
        "url": "https://hooks.slack.com/services/[secret SLACK_WEBHOOK_PATH]",
        "duration_ms": 10_000,
        "error": "too_many_requests",
        "bytes": 0,
    },
]


def _execution(script_id: uuid.UUID, tenant_id: int, status: str, **fields) -> str:
    now = utcnow()
    fields = {
        "trigger": "manual",
        "params": {"region": "eu-west-1", "dry_run": False, "batch": "2024-06-01T00:00:00Z/" + "p" * 60},
        **fields,
    }
    execution = Execution(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        script_id=script_id,
        script_version=1,
        status=status,
        queued_at=now - timedelta(minutes=3),
        started_at=now - timedelta(minutes=3),
        finished_at=now - timedelta(minutes=3) + timedelta(milliseconds=420),
        duration_ms=420.0,
        logs=[{"level": "log", "message": "reconciling " + "order-" * 30, "time": None}],
        **fields,
    )
    db.session.add(execution)
    db.session.commit()
    return str(execution.id)


def _fill_tenant(app: Flask, make_user) -> dict[str, str]:
    """Scripts of each type (one with two versions), runs, tokens, members and an invitation."""
    make_user(ADMIN, "acme", "admin")
    make_user(ADMIN, "globex-logistics-holdings", "viewer")  # so the tenant chooser lists two
    for email in MEMBERS:
        make_user(email, "acme", "editor")
    with app.app_context():
        tenant = db.session.scalar(db.select(Tenant).where(Tenant.name == "acme"))
        admin = db.session.scalar(db.select(User).where(User.email == ADMIN))
        long_name = "Nightly reconciliation of the orders that failed to sync"
        manual = service.create_script(tenant, admin, {"name": long_name, "type": "manual", "source": SOURCE})
        service.update_script(manual, admin, {"source": SOURCE.replace("1284", "1285") + "// v2\n"})
        cron = service.create_script(
            tenant,
            admin,
            {"name": "Hourly stock report", "type": "cron", "source": SOURCE, "cron_expression": "15 */2 * * 1-5"},
        )
        endpoint = service.create_script(
            tenant,
            admin,
            {
                "name": "Refund webhook",
                "type": "endpoint",
                "source": SOURCE,
                "endpoint_path": "/orders/{order_id}/refunds/{refund_id}",
                "endpoint_method": "POST",
            },
        )
        succeeded = _execution(manual.id, tenant.id, "succeeded", result=LONG_RESULT)
        failed = _execution(
            cron.id,
            tenant.id,
            "failed",
            error_kind="exception",
            error_message="TypeError: cannot read property 'reconciliationIdentifier' of undefined" * 2,
        )
        endpoint_call = _execution(
            endpoint.id,
            tenant.id,
            "succeeded",
            trigger="endpoint",
            params=None,
            http_summary={
                "method": "POST",
                "path": "/orders/ord_2024_000000000184467/refunds/rf_2024_00000000000000512",
                "query": ["include_line_items", "notify_customer_by_email", "idempotency_key"],
                "request_bytes": 18_432,
                "request_type": "application/x-www-form-urlencoded; charset=utf-8",
                "status": 201,
                "response_bytes": 2_048,
                "response_type": "application/json",
            },
        )
        draft = _execution(manual.id, tenant.id, "succeeded", trigger="draft", source=SOURCE + "// " + "x" * 200 + "\n")
        fetches = _execution(manual.id, tenant.id, "succeeded", result=LONG_RESULT, http_calls=HTTP_CALLS)
        for email, label in ((ADMIN, "CI deploys from the main branch"), (MEMBERS[0], "Grafana dashboards")):
            user = db.session.scalar(db.select(User).where(User.email == email))
            create_token(tenant, user, label)
        for name in ("STRIPE_LIVE_SECRET_KEY_FOR_THE_EU_MARKETPLACE_ACCOUNT_2024", "SMTP_PASSWORD"):
            secret_store.put(tenant.id, name, "a value that is never shown", admin.id)
        tenant.fetch_allowed_hosts = ["api.payments-provider-for-the-eu-marketplace.example", "*.hooks.slack.com"]
        _, invitation_token, _ = invitations.invite(tenant, admin, "new.colleague@acme-industries.example", "viewer")
        store(app, "acme", {LONG_KEY: LARGE_VALUE, "counter": 1}, ttl=86400)
        db.session.add(
            AuditEntry(
                tenant_id=tenant.id,
                actor_type="token",
                actor_user_id=admin.id,
                actor_token_id=1,
                actor_token_label="CI deploys from the main branch",
                actor_label=ADMIN,
                action="script.rollback",
                target_type="script",
                target_id=str(manual.id),
                target_label=long_name,
                target_version=3,
                address="2001:0db8:85a3:0000:0000:8a2e:0370:7334",
                user_agent="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) " * 3,
                changes={
                    "fields": ["cron_expression", "endpoint_path", "misfire_policy", "source", "timezone"],
                    "version": {"old": 2, "new": 3},
                    "restored_version": 1,
                },
            )
        )
        db.session.commit()
        return {
            "manual": str(manual.id),
            "cron": str(cron.id),
            "endpoint": str(endpoint.id),
            "succeeded": succeeded,
            "failed": failed,
            "endpoint call": endpoint_call,
            "draft": draft,
            "fetches": fetches,
            "invitation": invitation_token,
        }


# The page's width, and the controls that end beyond the screen's right edge (say, in a table
# that scrolls sideways inside its box): a user would have to find them.
MEASURE = """() => {
  const root = document.documentElement;
  const hidden = [...document.querySelectorAll("main a, main button, main select, main input:not([type=hidden])")]
    .filter((el) => el.getClientRects().length && !el.closest(".CodeMirror"))
    .filter((el) => el.getBoundingClientRect().right > root.clientWidth + 0.5)
    .map((el) => (el.textContent.trim() || el.getAttribute("name") || el.tagName).slice(0, 30));
  return {scroll: root.scrollWidth, client: root.clientWidth, hidden};
}"""


def _overflow(page: Page) -> dict | None:
    sizes = page.evaluate(MEASURE)
    return sizes if sizes["scroll"] > sizes["client"] or sizes["hidden"] else None


def test_no_page_is_wider_than_a_phone(
    app: Flask, phone_page: Page, live_server: str, make_user, log_in: Callable
) -> None:
    ids = _fill_tenant(app, make_user)
    script, run = "/scripts/{}", "/executions/{}"
    logged_out = {"login page": "/login", "invitation (logged out)": f"/invitations/{ids['invitation']}"}
    logged_in = {
        "dashboard": "/",
        "dashboard, last 24 hours": "/?window=24h",
        "scripts list": "/scripts",
        "new script": "/scripts/new",
        "new script, duplicating one": "/scripts/new?duplicate=" + ids["endpoint"],
        "new script from an example": "/scripts/new?example=json-endpoint",
        **{f"{kind} script page": script.format(ids[kind]) for kind in ("manual", "cron", "endpoint")},
        **{f"{kind} script edit page": script.format(ids[kind]) + "/edit" for kind in ("manual", "cron", "endpoint")},
        "versions list": script.format(ids["manual"]) + "/versions",
        "version diff": script.format(ids["manual"]) + "/versions/2",
        "delete confirmation": script.format(ids["manual"]) + "/delete",
        "executions list": "/executions",
        "succeeded execution": run.format(ids["succeeded"]),
        "failed execution": run.format(ids["failed"]),
        "endpoint call": run.format(ids["endpoint call"]),
        "draft execution": run.format(ids["draft"]),
        "execution with outbound HTTP calls": run.format(ids["fetches"]),
        "tokens": "/tokens",
        "account": "/account",
        "members": "/members",
        "usage": "/usage",
        "storage": "/storage",
        "storage key": "/storage/item?key=" + quote(LONG_KEY, safe=""),
        "secrets": "/secrets",
        "audit log": "/audit",
        "settings": "/settings",
        "audit log, filtered": f"/audit?actor={ADMIN}&action=script&since=2020-01-01",
        "tenant chooser": "/tenant",
        "invitation for another address": f"/invitations/{ids['invitation']}",
        "not found page": "/scripts/no-such-script",
    }
    adapter = app.url_map.bind("localhost")
    pages = {
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if "GET" in rule.methods and not rule.rule.startswith("/api/") and rule.endpoint not in NOT_PAGES | PARTIALS
    }
    paths = [*logged_out.values(), *logged_in.values()]
    visited = {adapter.match(path.split("?")[0], method="GET")[0] for path in paths}
    assert pages - visited == set(), "pages this test does not visit yet"

    wide = []
    for name, path in logged_out.items():
        phone_page.goto(live_server + path)
        if sizes := _overflow(phone_page):
            wide.append(f"{name} ({path}): {sizes}")
    log_in(phone_page, ADMIN)
    expect(phone_page.get_by_role("heading", name="Choose a tenant")).to_be_visible()
    phone_page.get_by_role("button", name="acme").click()
    for name, path in logged_in.items():
        phone_page.goto(live_server + path)
        expect(phone_page.locator(".user-email")).to_have_text(ADMIN)
        if sizes := _overflow(phone_page):
            wide.append(f"{name} ({path}): {sizes}")
    assert wide == [], "wider than a 390 px screen: " + "; ".join(wide)


def test_outbound_calls_fit_a_phone(
    app: Flask, phone_page: Page, live_server: str, make_user, make_script: Callable, log_in: Callable
) -> None:
    make_user(ADMIN, "acme", "admin")
    script_id = make_script(ADMIN, name="Nightly reconciliation")
    with app.app_context():
        tenant = db.session.scalar(db.select(Tenant).where(Tenant.name == "acme"))
        execution_id = _execution(script_id, tenant.id, "succeeded", http_calls=HTTP_CALLS)
    log_in(phone_page, ADMIN)
    phone_page.goto(f"{live_server}/executions/{execution_id}")
    section = phone_page.get_by_role("region", name="Outbound HTTP")
    expect(section.get_by_text("2 calls, 1 failed, total 11.28 s")).to_be_visible()
    url = section.get_by_text(LONG_URL, exact=True)
    expect(url).to_be_visible()
    expect(section.get_by_text("too many requests")).to_be_visible()
    assert _overflow(phone_page) is None
    box = url.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
