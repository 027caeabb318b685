"""The usage page in a real browser: an admin near both quotas sees the figures, the meters
and the warnings, at desktop and phone width, with nothing in the console (the meters are SVG
widths, since the CSP refuses inline styles); the dashboard points them there."""

import os
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from tests.browser.test_dashboard import _no_horizontal_scroll, watch_console
from webapp import quotas
from webapp.extensions import db
from webapp.models import Execution, Script, StorageItem, utcnow

ADMIN = "boss@acme.io"
SCREENSHOTS = Path(os.environ.get("USAGE_SCREENSHOTS", "")) if os.environ.get("USAGE_SCREENSHOTS") else None


@pytest.fixture
def settings(settings):
    return replace(settings, tenants=replace(settings.tenants, max_scripts=5, storage_mb=1))


@pytest.fixture
def near_both_quotas(app: Flask, make_user, make_script) -> None:
    """5 of 5 scripts; 850 KiB of the 1 MiB storage quota, 600 KiB of it values."""
    make_user(ADMIN, "acme", "admin")
    ids = [make_script(ADMIN, name=f"job {n}") for n in range(5)]
    with app.app_context():
        script = db.session.get(Script, uuid.UUID(str(ids[0])))
        for _ in range(5):
            db.session.add(
                Execution(
                    id=uuid.uuid4(),
                    tenant_id=script.tenant_id,
                    script_id=script.id,
                    script_version=1,
                    trigger="manual",
                    status="succeeded",
                    queued_at=utcnow(),
                    stored_bytes=50 * 1024,
                )
            )
        db.session.add(StorageItem(tenant_id=script.tenant_id, key="cache", value="c" * (600 * 1024 - 5)))
        db.session.commit()
        quotas.recount(script.tenant_id)
        db.session.commit()


@pytest.mark.usefixtures("near_both_quotas")
def test_usage_page_at_desktop_and_phone_width(
    page: Page, phone_page: Page, live_server: str, log_in: Callable, tmp_path: Path
) -> None:
    for current, width in ((page, 1280), (phone_page, 390)):
        problems = watch_console(current)
        log_in(current, ADMIN)
        expect(current.get_by_role("status", name="Quotas")).to_contain_text("Scripts: 5 of 5")
        if SCREENSHOTS:
            current.screenshot(path=str(SCREENSHOTS / f"dashboard-{width}.png"), full_page=True)
        current.get_by_role("link", name="See the tenant's usage").click()
        expect(current).to_have_url(f"{live_server}/usage")
        expect(current.get_by_role("link", name="Usage")).to_have_attribute("aria-current", "page")

        scripts = current.locator("#scripts-usage")
        expect(scripts).to_contain_text("5 of 5 (100%)")
        expect(scripts.get_by_role("img", name="5 of 5 scripts")).to_be_visible()
        storage = current.locator("#storage-usage")
        expect(storage).to_contain_text("850.0 KB of 1.0 MB (83%)")
        expect(storage.get_by_role("img", name="Storage values 600.0 KB and kept executions 250.0 KB of 1.0 MB"))
        expect(current.locator("#values-bytes")).to_have_text("600.0 KB")
        expect(current.locator("#executions-bytes")).to_have_text("250.0 KB")
        expect(storage.get_by_role("row", name="Kept executions (5) 250.0 KB")).to_be_visible()
        warnings = current.locator("p.quota-warning")
        expect(warnings).to_have_count(2)
        expect(warnings.nth(0)).to_have_text(
            "Scripts: 5 of 5, the quota (TENANT_MAX_SCRIPTS). Creating another is refused until one is deleted."
        )
        expect(warnings.nth(1)).to_contain_text("Storage: 850.0 KB of the 1.0 MB quota (TENANT_STORAGE_MB).")

        # The meters' parts are as wide as their shares: values then executions, in SVG units.
        values_part = storage.locator("rect.part.values")
        executions_part = storage.locator("rect.part.executions")
        assert float(values_part.get_attribute("width")) == pytest.approx(58.59, abs=0.01)
        assert float(executions_part.get_attribute("x")) == pytest.approx(58.59, abs=0.01)
        assert float(executions_part.get_attribute("width")) == pytest.approx(24.41, abs=0.01)
        assert storage.locator("svg.usage-bar").bounding_box()["width"] > (200 if width == 390 else 400)
        expect(scripts.locator("rect.part.scripts.full")).to_have_count(1)

        assert current.viewport_size["width"] == width
        _no_horizontal_scroll(current)
        target = (SCREENSHOTS or tmp_path) / f"usage-{width}.png"
        current.screenshot(path=str(target), full_page=True)
        assert problems == []


@pytest.mark.usefixtures("near_both_quotas")
def test_the_new_script_form_says_the_quota_is_reached(page: Page, live_server: str, log_in: Callable) -> None:
    problems = watch_console(page)
    log_in(page, ADMIN)
    page.goto(f"{live_server}/scripts/new")
    page.get_by_label("Name").fill("one too many")
    page.get_by_role("button", name="Create script").click()
    alert = page.locator("#quota-error")
    expect(alert).to_have_text(
        "This tenant has 5 scripts, as many as its quota allows (TENANT_MAX_SCRIPTS = 5): "
        "delete a script to create another (see usage)"
    )
    expect(page.get_by_label("Name")).to_have_value("one too many")
    if SCREENSHOTS:
        page.screenshot(path=str(SCREENSHOTS / "form-at-quota.png"), full_page=True)
    alert.get_by_role("link", name="see usage").click()
    expect(page).to_have_url(f"{live_server}/usage")
    assert [p for p in problems if "status of 422" not in p] == []  # the refused POST is the only one
