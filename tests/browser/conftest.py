"""Browser tests: the app served over real HTTP, driven by Debian's chromium through Playwright.

They run on SQLite only: they exercise the UI; database behaviour is covered by the
API tests on both backends.  Every test in this folder is marked ``browser``.
"""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import PASSWORD
from webapp.extensions import db
from webapp.models import Tenant, User
from webapp.scripts import service

HERE = Path(__file__).parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 5_000  # every wait in these tests is bounded by this
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Overrides the root fixture: SQLite only, no postgresql parametrization here."""
    return f"sqlite:///{tmp_path / 'browser.db'}"


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        expect.set_options(timeout=TIMEOUT_MS)
        yield browser
        browser.close()


def _new_page(browser: Browser, viewport: dict[str, int], **options: Any) -> Iterator[Page]:
    context = browser.new_context(viewport=viewport, **options)
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    yield from _new_page(browser, DESKTOP)


@pytest.fixture
def phone_page(browser: Browser) -> Iterator[Page]:
    yield from _new_page(browser, PHONE)


@pytest.fixture
def touch_phone_page(browser: Browser) -> Iterator[Page]:
    """390 px with a touch screen and no mouse: CSS `(hover: none)` matches."""
    yield from _new_page(browser, PHONE, has_touch=True)


@pytest.fixture
def log_in(live_server: str) -> Callable[[Page, str], None]:
    """log_in(page, email) logs in through the /login form and waits for the dashboard."""

    def do(page: Page, email: str) -> None:
        page.goto(f"{live_server}/login")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(lambda url: "/login" not in url)
        expect(page.locator(".user-email")).to_have_text(email)

    return do


@pytest.fixture
def make_script(app: Flask) -> Callable[..., str]:
    """make_script(email, tenant, **fields) -> script id, created through the service."""

    def make(email: str, tenant: str = "acme", **fields: Any) -> str:
        with app.app_context():
            t = db.session.scalar(db.select(Tenant).where(Tenant.name == tenant))
            u = db.session.scalar(db.select(User).where(User.email == email))
            data = {"type": "manual", "source": "async function main(event) {\n  return 1;\n}\n", **fields}
            return service.create_script(t, u, data).id

    return make


GREETER = "async function main(event) {\n  console.log('hello', event.name);\n  return { hi: event.name };\n}\n"


@pytest.fixture
def greeter(page: Page, make_user, log_in: Callable, make_script: Callable, start_worker: Callable) -> str:
    """A manual script "greeter" (logs and returns `event.name`), a worker, and `page` logged in
    as its editor ed@acme.io; returns the script's id."""
    make_user("ed@acme.io", "acme", "editor")
    script_id = str(make_script("ed@acme.io", name="greeter", source=GREETER))
    start_worker()
    log_in(page, "ed@acme.io")
    return script_id
