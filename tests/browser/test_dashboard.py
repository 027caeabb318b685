"""The dashboard in a real browser: server-drawn SVG charts with data, a readable empty state,
the window switched in place by htmx, a phone-width layout, and nothing in the console (a
CSP violation, say an inline style, would show up there)."""

import os
import re
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from tests.browser.conftest import PHONE
from webapp.extensions import db
from webapp.models import Execution, Script, utcnow

EDITOR = "ed@acme.io"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "dashboard.png"
MARKER = "window.__dashboardMarker"


def watch_console(page: Page) -> list[str]:
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    return problems


@pytest.fixture
def add_run(app: Flask) -> Callable[..., str]:
    """add_run(script_id, status, ms, minutes_ago) -> execution id, written directly."""

    def add(script_id: str, status: str, ms: float | None, minutes_ago: float) -> str:
        with app.app_context():
            script = db.session.get(Script, uuid.UUID(str(script_id)))
            failed = status == "failed"
            execution = Execution(
                id=uuid.uuid4(),
                tenant_id=script.tenant_id,
                script_id=script.id,
                script_version=1,
                trigger="cron" if script.type == "cron" else "manual",
                status=status,
                error_kind="exception" if failed else None,
                error_message="TypeError: cannot read property 'id' of undefined (line 3, column 14)"
                if failed
                else None,
                queued_at=utcnow() - timedelta(minutes=minutes_ago),
                duration_ms=ms if status in ("succeeded", "failed") else None,
            )
            db.session.add(execution)
            db.session.commit()
            return str(execution.id)

    return add


def _no_horizontal_scroll(page: Page) -> None:
    sizes = page.evaluate("() => ({scroll: document.documentElement.scrollWidth, inner: window.innerWidth})")
    assert sizes["scroll"] <= sizes["inner"] + 1, f"{page.url} scrolls sideways: {sizes}"


def test_dashboard_with_runs(
    page: Page, live_server: str, make_user, make_script, add_run, log_in: Callable, tmp_path
) -> None:
    problems = watch_console(page)
    make_user(EDITOR, "acme", "editor")
    report = make_script(EDITOR, name="Nightly report", type="cron", cron_expression="*/15 * * * *")
    sync = make_script(EDITOR, name="Sync orders")
    hook = make_script(EDITOR, name="Order webhook", type="endpoint", endpoint_path="/orders", endpoint_method="POST")
    for minute in range(0, 58, 3):
        add_run(hook, "succeeded", 8 + minute % 7, minute)
        add_run(hook, "succeeded", 9, minute + 0.5)
        add_run(report, "succeeded" if minute % 12 else "skipped", 420 + minute, minute + 1)
    for minute in (2, 11, 30):
        add_run(sync, "failed", 35, minute)
    failure = add_run(sync, "failed", 41, 0.2)
    add_run(sync, "running", None, 0)
    log_in(page, EDITOR)

    page.goto(live_server + "/")
    chart = page.get_by_role("img", name="Runs per minute, last hour, by status")
    expect(chart).to_be_visible()
    assert chart.bounding_box()["width"] > 600
    expect(page.locator("#stat-runs")).to_have_text("65")
    expect(page.locator("#stat-failed")).to_have_text("4")
    # 20 minutes hold the webhook's runs, of which 20 also hold a report run or a skip, and so on:
    # every segment is one SVG rect with a class per status.
    expect(page.locator("svg.chart rect.bar.failed")).to_have_count(4)
    expect(page.locator("svg.chart rect.bar.pending")).to_have_count(1)
    assert page.locator("svg.chart rect.bar.succeeded").count() >= 20
    legend = page.get_by_role("list", name="Runs by status")
    expect(legend).to_contain_text("4 failed")
    expect(legend).to_contain_text("1 pending")
    slowest = page.locator("section", has=page.get_by_role("heading", name="Slowest scripts"))
    expect(slowest.get_by_role("link").first).to_have_text("Nightly report")
    failing = page.locator("section", has=page.get_by_role("heading", name="Most failing scripts"))
    expect(failing.get_by_role("row")).to_have_count(2)
    expect(failing).to_contain_text("100%")
    health = page.locator("section", has=page.get_by_role("heading", name="Platform health"))
    expect(health).to_contain_text("0 running — nothing will run")

    target = SCREENSHOT if os.environ.get("SCREENSHOTS") == "1" else tmp_path / SCREENSHOT.name
    page.screenshot(path=str(target), full_page=True)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Another window, swapped in place by htmx (no page load), and the URL says which.
    page.evaluate(f"{MARKER} = 1")
    page.get_by_label("Window", exact=True).select_option("24h")
    expect(page.get_by_role("img", name="Runs per 15 minutes, last 24 hours, by status")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/\?window=24h$"))
    assert page.evaluate(MARKER) == 1

    failures = page.locator("section", has=page.get_by_role("heading", name="Recent failures"))
    failures.get_by_role("link").first.click()
    expect(page).to_have_url(f"{live_server}/executions/{failure}")
    expect(page.get_by_text("cannot read property 'id' of undefined").first).to_be_visible()
    assert problems == []


def test_dashboard_without_runs_and_at_phone_width(
    page: Page, phone_page: Page, live_server: str, make_user, log_in: Callable
) -> None:
    make_user(EDITOR, "acme", "editor")
    for current in (page, phone_page):
        problems = watch_console(current)
        log_in(current, EDITOR)
        current.goto(live_server + "/")
        expect(current.get_by_text("Nothing ran in the last hour.")).to_be_visible()
        expect(current.locator("#stat-runs")).to_have_text("0")
        expect(current.locator("#stat-p95")).to_have_text("—")
        expect(current.get_by_text("No failed runs in the last hour.")).to_be_visible()
        expect(current.locator("svg.chart")).to_have_count(0)
        expect(current.get_by_text("cron scripts are not firing")).to_be_visible()
        assert problems == []
    assert phone_page.viewport_size == PHONE
    _no_horizontal_scroll(phone_page)


def test_chart_fits_a_phone(phone_page: Page, live_server: str, make_user, make_script, add_run, log_in) -> None:
    problems = watch_console(phone_page)
    make_user(EDITOR, "acme", "editor")
    script = make_script(EDITOR, name="A script with a rather long name that has to wrap somewhere")
    for minute in range(10):
        add_run(script, "failed" if minute % 3 == 0 else "succeeded", 1200.5, minute)
    log_in(phone_page, EDITOR)
    phone_page.goto(live_server + "/")
    chart = phone_page.get_by_role("img", name="Runs per minute, last hour, by status")
    expect(chart).to_be_visible()
    assert 300 < chart.bounding_box()["width"] <= PHONE["width"]
    _no_horizontal_scroll(phone_page)
    assert problems == []


# Each axis label's size on screen (its font size in the chart's units, scaled as the chart
# is) and its box relative to the chart's.
AXIS_LABELS = """(svg) => {
  const box = svg.getBoundingClientRect();
  const scale = box.width / svg.viewBox.baseVal.width;
  return [...svg.querySelectorAll("text.axis")].map((text) => {
    const r = text.getBoundingClientRect();
    return {text: text.textContent, px: parseFloat(getComputedStyle(text).fontSize) * scale,
            left: r.left - box.left, right: r.right - box.left, top: r.top - box.top, bottom: r.bottom - box.top,
            width: box.width, height: box.height};
  });
}"""


def _unreadable_labels(page: Page) -> list[str]:
    """Axis labels under 11 px, cut off by the chart's edge, or overlapping another label."""
    labels = page.locator("svg.chart").evaluate(AXIS_LABELS)
    assert len(labels) >= 6
    problems = [f"{a['text']!r} is {a['px']:.1f} px" for a in labels if a["px"] < 11]
    problems += [
        f"{a['text']!r} is cut off"
        for a in labels
        if a["left"] < 0 or a["top"] < 0 or a["right"] > a["width"] + 0.5 or a["bottom"] > a["height"] + 0.5
    ]
    problems += [
        f"{a['text']!r} overlaps {b['text']!r}"
        for i, a in enumerate(labels)
        for b in labels[i + 1 :]
        if a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]
    ]
    return problems


def test_chart_reads_on_a_touch_phone(
    page: Page, touch_phone_page: Page, live_server: str, make_user, make_script, add_run, log_in: Callable
) -> None:
    make_user(EDITOR, "acme", "editor")
    script = make_script(EDITOR, name="Sync orders")
    for _ in range(14):
        add_run(script, "succeeded", 30, 0.5)
    for minute in range(7, 50, 7):
        add_run(script, "succeeded", 30, minute + 0.5)
    add_run(script, "failed", 30, 24.5)
    for current in (page, touch_phone_page):
        log_in(current, EDITOR)
    touch_phone_page.goto(live_server + "/")
    expect(touch_phone_page.get_by_role("img", name="Runs per minute, last hour, by status")).to_be_visible()
    assert _unreadable_labels(touch_phone_page) == []

    # No "hover" on a screen without a pointer; each period's numbers are in a list instead.
    chart_card = touch_phone_page.locator("section", has=touch_phone_page.get_by_role("heading", name="Runs per"))
    hint = chart_card.locator("p.hint")
    assert "hover" not in hint.inner_text().lower()
    expect(hint).to_contain_text("Each minute's numbers (UTC) are in the list below.")
    chart_card.get_by_text("Runs per minute, as a list").click()
    items = chart_card.get_by_role("listitem")
    expect(items.filter(has_text=re.compile(r"^\d\d:\d\d UTC: 1 run \(1 failed\)$"))).to_be_visible()
    expect(items.filter(has_text="0 runs")).to_have_count(0)  # only the periods that had runs

    touch_phone_page.get_by_label("Window", exact=True).select_option("24h")
    expect(touch_phone_page.get_by_role("img", name="Runs per 15 minutes, last 24 hours, by status")).to_be_visible()
    assert _unreadable_labels(touch_phone_page) == []

    # With a mouse, the hint still says hovering works.
    page.goto(live_server + "/")
    assert "Hover a bar for its minute (UTC)" in page.locator("p.hint").filter(has_text="queued").inner_text()
    assert _unreadable_labels(page) == []
