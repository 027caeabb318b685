"""Changing one's password in Chromium: the header leads to /account, refusals are named at
their fields, and a change logs out the account's other browser while this one stays."""

from collections.abc import Callable

from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import PHONE
from tests.browser.test_invitations import visitor
from tests.conftest import PASSWORD

VIEWER = "vi@acme.io"
NEW = "a-brand-new-password"


def test_a_user_changes_their_password_and_their_other_browser_is_logged_out(
    browser: Browser, page: Page, live_server: str, make_user, log_in: Callable
) -> None:
    make_user(VIEWER, "acme", "viewer")
    with visitor(browser, PHONE) as phone:
        log_in(phone, VIEWER)
        log_in(page, VIEWER)
        page.get_by_role("link", name=VIEWER).click()
        expect(page).to_have_url(f"{live_server}/account")
        expect(page.get_by_role("heading", name="Change your password")).to_be_visible()

        page.get_by_label("Current password").fill("not-my-password")
        page.get_by_label("New password", exact=True).fill(NEW)
        page.get_by_label("New password again").fill(NEW)
        page.get_by_role("button", name="Change password").click()
        expect(page.get_by_role("alert")).to_have_text("That is not your current password.")
        expect(page.get_by_label("Current password")).to_have_attribute("aria-invalid", "true")

        page.get_by_label("Current password").fill(PASSWORD)
        page.get_by_label("New password", exact=True).fill(NEW)
        page.get_by_label("New password again").fill(NEW + "!")
        page.get_by_role("button", name="Change password").click()
        expect(page.get_by_role("alert")).to_have_text("The two passwords differ.")

        page.get_by_label("Current password").fill(PASSWORD)
        page.get_by_label("New password", exact=True).fill(NEW)
        page.get_by_label("New password again").fill(NEW)
        page.get_by_role("button", name="Change password").click()
        expect(page.locator(".flash")).to_have_text("Your password was changed. Your other sessions were logged out.")

        page.goto(f"{live_server}/scripts")  # this browser stays logged in
        expect(page.locator(".user-email")).to_have_text(VIEWER)
        phone.goto(f"{live_server}/scripts")  # the other one is logged out
        expect(phone).to_have_url(f"{live_server}/login?next=/scripts")
        phone.get_by_label("Email").fill(VIEWER)
        phone.get_by_label("Password").fill(NEW)
        phone.get_by_role("button", name="Log in").click()
        expect(phone).to_have_url(f"{live_server}/scripts")
