"""The /secrets page in Chromium: add, replace and delete a secret; the value field is never
filled in, not even after a refused form; the value appears nowhere on the page."""

from collections.abc import Callable

from flask import Flask
from playwright.sync_api import Page, expect

from webapp.extensions import db
from webapp.models import Tenant
from webapp.secret_store import service

EDITOR = "ed@acme.io"
VALUE = "sk_live_51H-correct-horse-battery-staple"


def _read(app: Flask, name: str) -> str | None:
    with app.app_context():
        tenant_id = db.session.scalar(db.select(Tenant.id).where(Tenant.name == "acme"))
        return service.read_for_run(tenant_id, name)


def test_add_replace_and_delete_a_secret(page: Page, app: Flask, live_server: str, make_user, log_in: Callable) -> None:
    make_user(EDITOR, "acme", "editor")
    log_in(page, EDITOR)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Secrets").click()
    expect(page.get_by_role("heading", name="Secrets", exact=True)).to_be_visible()
    page.get_by_label("Name", exact=True).fill("STRIPE_KEY")
    page.get_by_label("Value", exact=True).fill(VALUE)
    page.get_by_role("button", name="Add secret").click()
    expect(page.get_by_role("status")).to_contain_text("Secret STRIPE_KEY saved")
    expect(page.get_by_label("Value", exact=True)).to_have_value("")
    row = page.get_by_role("row").filter(has_text="STRIPE_KEY")
    expect(row.get_by_role("cell").nth(3)).to_have_text(EDITOR)
    assert VALUE not in page.content()
    assert _read(app, "STRIPE_KEY") == VALUE

    # A refused value (over 16 KiB) is not sent back: the field comes back empty.
    row.get_by_text("Replace").click()
    new_value = row.get_by_label("New value of STRIPE_KEY")
    expect(new_value).to_have_value("")
    new_value.fill("x" * 17000)
    row.get_by_role("button", name="Save new value").click()
    expect(page.get_by_role("alert")).to_contain_text("over the 16 KiB limit")
    row = page.get_by_role("row").filter(has_text="STRIPE_KEY")
    expect(row.get_by_label("New value of STRIPE_KEY")).to_have_value("")
    row.get_by_label("New value of STRIPE_KEY").fill("rotated-" + VALUE)
    row.get_by_role("button", name="Save new value").click()
    expect(page.get_by_role("status")).to_contain_text("Secret STRIPE_KEY replaced")
    assert _read(app, "STRIPE_KEY") == "rotated-" + VALUE
    assert VALUE not in page.content()
    page.get_by_role("row").filter(has_text="STRIPE_KEY").get_by_text("Replace").click()
    expect(page.get_by_label("New value of STRIPE_KEY")).to_have_value("")

    dialogs: list[str] = []
    page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("row").filter(has_text="STRIPE_KEY")).to_have_count(1)  # dismissed: kept
    assert dialogs == ["Delete secret STRIPE_KEY? Scripts will read null for it."]
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("status")).to_contain_text("Secret STRIPE_KEY deleted")
    expect(page.get_by_text("No secrets yet.")).to_be_visible()
    assert _read(app, "STRIPE_KEY") is None
