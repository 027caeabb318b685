"""Members join by invitation, in Chromium: the admin copies the link, and each kind of visitor
opens it; an existing and an unknown address read the same; a login lands in the last-used
tenant; every page reads well at desktop and phone width."""

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import DESKTOP, PHONE, TIMEOUT_MS
from tests.conftest import PASSWORD

ADMIN = "boss@acme.io"
LINK = re.compile(r"^http://127\.0\.0\.1:\d+/invitations/[A-Za-z0-9_-]{43}$")


@contextmanager
def visitor(browser: Browser, viewport: dict[str, int] = DESKTOP) -> Iterator[Page]:
    """Another person's browser: its own cookies."""
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def create_invitation(page: Page, live_server: str, email: str, role: str) -> str:
    """On /members: invite, then copy the link with the Copy button; returns the clipboard."""
    page.goto(f"{live_server}/members")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Role", exact=True).select_option(role)
    page.get_by_role("button", name="Create invitation link").click()
    notice = page.locator("#invitation-created")
    expect(notice.get_by_role("heading")).to_have_text(f"Invitation link for {email}")
    copy = notice.locator("button[data-copy]")
    expect(copy).to_have_text("Copy link")
    copy.click()
    expect(copy).to_have_text("Copied")
    link = page.evaluate("navigator.clipboard.readText()")
    assert LINK.match(link), link
    expect(page.locator("#invitation-link")).to_have_text(link)
    return link


def main_text(page: Page) -> str:
    """The visible text of the page's main part, with times (which tick) blanked."""
    page.evaluate("document.querySelectorAll('main time').forEach(t => { t.textContent = 'TIME'; })")
    return page.locator("main").inner_text()


def admin_page(page: Page, live_server: str, log_in: Callable) -> Page:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server)
    log_in(page, ADMIN)
    return page


def test_a_new_person_creates_the_account_from_the_copied_link(
    browser: Browser, page: Page, live_server: str, make_user, log_in: Callable
) -> None:
    make_user(ADMIN, "acme", "admin")
    admin_page(page, live_server, log_in)
    link = create_invitation(page, live_server, "new@example.com", "editor")
    pending = page.locator("table.invitations")
    expect(pending.get_by_role("row")).to_have_count(2)
    expect(pending).to_contain_text("new@example.com")
    expect(pending).to_contain_text(ADMIN)

    with visitor(browser) as newcomer:
        newcomer.goto(link)
        expect(newcomer.get_by_role("heading", level=1)).to_have_text("Join acme")
        expect(newcomer.get_by_text("The invitation is for new@example.com.")).to_be_visible()
        newcomer.get_by_label("Password", exact=True).fill("my-own-password")
        newcomer.get_by_label("Confirm password").fill("my-own-passwor")
        newcomer.get_by_role("button", name="Create account and join").click()
        expect(newcomer.get_by_role("alert")).to_have_text("The two passwords differ.")
        newcomer.get_by_label("Password", exact=True).fill("my-own-password")
        newcomer.get_by_label("Confirm password").fill("my-own-password")
        newcomer.get_by_role("button", name="Create account and join").click()
        expect(newcomer).to_have_url(f"{live_server}/")
        expect(newcomer.locator(".flash")).to_have_text("You joined acme as editor.")
        expect(newcomer.locator(".user-email")).to_have_text("new@example.com")
        expect(newcomer.locator(".tenant-name")).to_have_text("acme · editor")
        newcomer.goto(link)  # used
        expect(newcomer.get_by_role("heading", level=1)).to_have_text("This invitation link is not valid")

    page.goto(f"{live_server}/members")
    expect(page.get_by_text("No pending invitations.")).to_be_visible()
    expect(page.get_by_label("Role of new@example.com")).to_have_value("editor")


def test_an_existing_account_logs_in_from_the_link_and_accepts(
    browser: Browser, page: Page, live_server: str, make_user, log_in: Callable
) -> None:
    make_user(ADMIN, "acme", "admin")
    make_user("ann@example.com", "globex", "viewer")
    admin_page(page, live_server, log_in)
    link = create_invitation(page, live_server, "ann@example.com", "viewer")

    with visitor(browser) as ann:
        ann.goto(link)
        ann.get_by_role("link", name="Log in to accept").click()
        expect(ann.get_by_label("Email")).to_have_value("ann@example.com")
        ann.get_by_label("Password").fill(PASSWORD)
        ann.get_by_role("button", name="Log in").click()
        expect(ann).to_have_url(link)
        expect(ann.get_by_text("You are invited to the tenant acme as viewer by boss@acme.io.")).to_be_visible()
        ann.get_by_role("button", name="Accept and join acme").click()
        expect(ann).to_have_url(f"{live_server}/")
        expect(ann.locator(".flash")).to_have_text("You joined acme as viewer.")
        expect(ann.get_by_label("Tenant")).to_have_value(re.compile(r"\d+"))
        expect(ann.locator("#tenant-select option:checked")).to_have_text("acme (viewer)")


def test_another_account_with_the_link_is_told_it_is_for_another_address(
    browser: Browser, page: Page, live_server: str, make_user, log_in: Callable
) -> None:
    make_user(ADMIN, "acme", "admin")
    make_user("eve@globex.io", "globex", "admin")
    admin_page(page, live_server, log_in)
    link = create_invitation(page, live_server, "ann@example.com", "admin")

    with visitor(browser) as eve:
        log_in(eve, "eve@globex.io")
        eve.goto(link)
        expect(eve.get_by_role("heading", level=1)).to_have_text("This invitation is for another address")
        text = main_text(eve)
        assert "You are logged in as eve@globex.io" in text
        assert "ann@example.com" not in text and "acme" not in text and "admin" not in text
        eve.get_by_role("button", name="Log out and open the invitation").click()
        expect(eve).to_have_url(link)
        expect(eve.get_by_role("heading", name="New here? Create your account")).to_be_visible()


def test_an_existing_and_an_unknown_address_read_the_same(
    browser: Browser, page: Page, live_server: str, make_user, log_in: Callable
) -> None:
    make_user(ADMIN, "acme", "admin")
    make_user("known@globex.io", "globex", "viewer")
    admin_page(page, live_server, log_in)
    page.on("dialog", lambda dialog: dialog.accept())
    answers, links = {}, {}
    for email in ("known@globex.io", "nobody@globex.io"):
        links[email] = create_invitation(page, live_server, email, "editor")
        answers[email] = main_text(page).replace(email, "EMAIL").replace(links[email], "LINK")
        page.get_by_role("button", name="Revoke").click()  # so that each page lists its own alone
        expect(page.get_by_text("No pending invitations.")).to_be_visible()
    assert answers["known@globex.io"] == answers["nobody@globex.io"]
    assert "Invitation link for EMAIL" in answers["known@globex.io"]


def test_the_anonymous_page_of_an_existing_and_an_unknown_address_read_the_same(
    browser: Browser, page: Page, live_server: str, make_user, log_in: Callable
) -> None:
    make_user(ADMIN, "acme", "admin")
    make_user("known@globex.io", "globex", "viewer")
    admin_page(page, live_server, log_in)
    links = {e: create_invitation(page, live_server, e, "editor") for e in ("known@globex.io", "nobody@globex.io")}
    texts = {}
    with visitor(browser) as stranger:
        for email, link in links.items():
            stranger.goto(link)
            texts[email] = main_text(stranger).replace(email, "EMAIL")
            expect(stranger.get_by_label("Email")).to_have_value(email)
    assert texts["known@globex.io"] == texts["nobody@globex.io"]
    assert "Log in to accept" in texts["known@globex.io"] and "Create your account" in texts["known@globex.io"]


def test_a_login_lands_in_the_last_used_tenant(
    browser: Browser, page: Page, live_server: str, make_user, log_in: Callable
) -> None:
    make_user("ann@example.com", "acme", "viewer")
    make_user("ann@example.com", "globex", "editor")
    log_in(page, "ann@example.com")
    expect(page).to_have_url(f"{live_server}/tenant")
    expect(page.get_by_role("heading", level=1)).to_have_text("Choose a tenant")
    page.get_by_role("button", name=re.compile(r"^globex")).click()
    expect(page).to_have_url(f"{live_server}/")
    expect(page.locator("#tenant-select option:checked")).to_have_text("globex (editor)")
    with visitor(browser) as later:  # another browser, another day
        log_in(later, "ann@example.com")
        expect(later).to_have_url(f"{live_server}/")
        expect(later.locator("#tenant-select option:checked")).to_have_text("globex (editor)")
        later.get_by_label("Tenant").select_option(label="acme (viewer)")  # the switcher submits itself
        expect(later.locator("#tenant-select option:checked")).to_have_text("acme (viewer)")
    with visitor(browser) as again:
        log_in(again, "ann@example.com")
        expect(again.locator("#tenant-select option:checked")).to_have_text("acme (viewer)")


def _shoot(page: Page, name: str, folder: Path) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, (name, page.viewport_size, overflow)
    page.screenshot(path=str(folder / f"{name}-{page.viewport_size['width']}.png"), full_page=True)


def test_the_pages_read_well_at_desktop_and_phone_width(
    browser: Browser, live_server: str, make_user, log_in: Callable, tmp_path: Path
) -> None:
    """No sideways scrolling at 1280 px or 390 px. INVITATION_SCREENSHOTS=dir keeps the pictures."""
    folder = Path(os.environ.get("INVITATION_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    make_user(ADMIN, "acme", "admin")
    make_user("long.address.of.someone@a-rather-long-domain-name.example.com", "acme", "viewer")
    make_user("ann@example.com", "initech", "viewer")
    make_user("ann@example.com", "globex-industries-international", "editor")
    make_user("eve@globex.io", "globex", "viewer")
    for viewport in (DESKTOP, PHONE):
        with visitor(browser, viewport) as admin, visitor(browser, viewport) as other:
            admin.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server)
            log_in(admin, ADMIN)
            create_invitation(admin, live_server, "someone.new@a-rather-long-domain-name.example.com", "viewer")
            link = create_invitation(admin, live_server, "ann@example.com", "editor")
            _shoot(admin, "members", folder)
            other.goto(link)
            _shoot(other, "join", folder)
            other.get_by_role("link", name="Log in to accept").click()
            other.get_by_label("Password").fill(PASSWORD)
            other.get_by_role("button", name="Log in").click()
            expect(other).to_have_url(link)
            _shoot(other, "accept", folder)
            other.goto(f"{live_server}/tenant")
            _shoot(other, "choose-tenant", folder)
            other.goto(f"{live_server}/invitations/not-a-valid-token")
            _shoot(other, "invalid", folder)
        with visitor(browser, viewport) as eve:
            log_in(eve, "eve@globex.io")
            eve.goto(link)
            _shoot(eve, "other-address", folder)
