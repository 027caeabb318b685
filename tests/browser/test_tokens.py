"""The API tokens page in Chromium: a new token is shown once, on the page "Create token" leads
to; reloading that page makes no second token; new tokens are viewers unless chosen; an expiry
is listed."""

from collections.abc import Callable

from flask import Flask
from playwright.sync_api import Page, expect

from webapp.extensions import db
from webapp.models import ApiToken

ADMIN = "boss@acme.io"


def _count(app: Flask) -> int:
    with app.app_context():
        return db.session.scalar(db.select(db.func.count()).select_from(ApiToken))


def test_reloading_after_create_token_makes_no_second_token(
    page: Page, app: Flask, live_server: str, make_user, log_in: Callable
) -> None:
    make_user(ADMIN, "acme", "admin")
    log_in(page, ADMIN)
    page.goto(f"{live_server}/tokens")
    expect(page.get_by_label("Role")).to_have_value("viewer")
    page.get_by_label("Label").fill("deploys")
    page.get_by_label("Expires in (days)").fill("30")
    page.get_by_role("button", name="Create token").click()
    new_token = page.locator("#new-token")
    expect(new_token).to_be_visible()
    plaintext = new_token.inner_text()
    assert plaintext.startswith("srt_")
    assert page.url == f"{live_server}/tokens" and plaintext not in page.url
    row = page.get_by_role("row").filter(has_text="deploys")
    expect(row.get_by_role("cell").nth(2)).to_have_text("viewer")
    expect(row.get_by_role("cell").nth(5)).not_to_have_text("never")
    assert _count(app) == 1

    page.reload()
    expect(page.get_by_role("heading", name="Tokens of this tenant")).to_be_visible()
    expect(page.locator("#new-token")).to_have_count(0)  # shown once
    expect(page.get_by_role("row").filter(has_text="deploys")).to_have_count(1)
    assert plaintext not in page.content()
    assert _count(app) == 1
