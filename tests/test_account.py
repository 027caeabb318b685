"""/account: every user changes their own password; the other sessions of the account end,
this one stays (docs/members.md)."""

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import PASSWORD, csrf_from
from webapp.auth.passwords import MIN_LENGTH
from webapp.auth.ratelimit import MAX_FAILURES

NEW = "a-brand-new-password"


def _log_in(client: FlaskClient, email: str, password: str = PASSWORD) -> int:
    csrf = csrf_from(client.get("/login").get_data(as_text=True))
    return client.post("/login", data={"email": email, "password": password, "csrf_token": csrf}).status_code


def _change(client: FlaskClient, csrf: str, current: str, password: str, confirm: str | None = None):
    data = {"csrf_token": csrf, "current": current, "password": password}
    return client.post("/account", data={**data, "confirm": password if confirm is None else confirm})


@pytest.fixture
def viewer_session(make_user, login) -> str:
    make_user("vi@acme.io", "acme", "viewer")
    return login("vi@acme.io")


def test_every_user_finds_their_account_in_the_header(client, viewer_session):
    page = client.get("/").get_data(as_text=True)
    assert '<a class="user-email" href="/account"' in page
    account = client.get("/account")
    assert account.status_code == 200
    html = account.get_data(as_text=True)
    assert "Change your password" in html and 'name="csrf_token"' in html
    assert f"At least {MIN_LENGTH} characters." in html


@pytest.mark.parametrize(
    ("current", "password", "confirm", "field", "message"),
    [
        ("wrong-password", NEW, NEW, "current", "That is not your current password."),
        ("", NEW, NEW, "current", "Enter your current password."),
        (PASSWORD, NEW, NEW + "x", "confirm", "The two passwords differ."),
        (PASSWORD, "short", "short", "password", f"The password must be at least {MIN_LENGTH} characters."),
    ],
)
def test_a_refused_change_names_the_field_and_changes_nothing(
    client, app: Flask, viewer_session, current, password, confirm, field, message
):
    response = _change(client, viewer_session, current, password, confirm)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    error_id = {"current": "current-password", "password": "new-password", "confirm": "confirm-password"}[field]
    assert f'<p class="field-error" id="{error_id}-error" role="alert">{message}</p>' in page
    other = app.test_client()
    assert _log_in(other, "vi@acme.io", NEW) == 401 and _log_in(other, "vi@acme.io") == 302


def test_a_change_ends_the_other_sessions_and_keeps_this_one(client, app: Flask, viewer_session):
    laptop = app.test_client()
    assert _log_in(laptop, "vi@acme.io") == 302
    assert laptop.get("/scripts").status_code == 200
    response = _change(client, viewer_session, PASSWORD, NEW)
    assert response.status_code == 303 and response.headers["Location"] == "/account"
    assert "Your password was changed. Your other sessions were logged out." in client.get("/account").get_data(
        as_text=True
    )
    assert client.get("/scripts").status_code == 200  # this session stays
    ended = laptop.get("/scripts")
    assert ended.status_code == 302 and ended.headers["Location"].startswith("/login")
    fresh = app.test_client()
    assert _log_in(fresh, "vi@acme.io", PASSWORD) == 401
    assert _log_in(fresh, "vi@acme.io", NEW) == 302


def test_wrong_current_passwords_count_as_failed_logins(client, app: Flask, viewer_session):
    for _ in range(MAX_FAILURES):
        assert _change(client, viewer_session, "guess", NEW).status_code == 422
    locked = _change(client, viewer_session, PASSWORD, NEW)
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    assert "Too many failed attempts." in locked.get_data(as_text=True)
    assert _log_in(app.test_client(), "vi@acme.io") == 429  # the same lock as the login form's
