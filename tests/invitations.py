"""Helpers shared by the invitation tests: invite through the members page, read the link,
and compare pages as a person would see them."""

import re
from html import unescape

from flask.testing import FlaskClient

from tests.conftest import PASSWORD, csrf_from

LINK = re.compile(r'<pre class="copyable" id="invitation-link">(https?://[^/]+(/invitations/([A-Za-z0-9_-]+)))</pre>')


def invite(client: FlaskClient, csrf: str, email: str, role: str = "editor", **extra: str):
    """POST the members page's invite form; returns the response."""
    return client.post("/members/invitations", data={"csrf_token": csrf, "email": email, "role": role, **extra})


def link_of(response) -> str:
    """The path (/invitations/<token>) shown once on the page after inviting."""
    match = LINK.search(response.get_data(as_text=True))
    assert match, response.get_data(as_text=True)
    return match.group(2)


def visible_text(html: str) -> str:
    """What a reader sees: the page's text without markup, whitespace collapsed."""
    body = html.split("<body", 1)[-1].split(">", 1)[-1]  # the body tag's attributes (its CSRF header) are not seen
    text = re.sub(r"<[^>]+>", " ", body)
    return re.sub(r"\s+", " ", unescape(text)).strip()


def page_shape(html: str, *names: str) -> str:
    """The HTML with the given names (emails, tokens) and per-request values blanked."""
    html = re.sub(r'(name="csrf_token" value=|name="csrf-token" content=|"X-CSRFToken": )"[^"]*"', r'\1"…"', html)
    html = re.sub(r"<time[^>]*>[^<]*</time>", "<time/>", html)
    html = re.sub(r"/members/invitations/\d+/", "/members/invitations/…/", html)
    for name in names:
        html = html.replace(name, "…")
    return html


def log_in(client: FlaskClient, email: str, password: str = PASSWORD, next_path: str | None = None):
    csrf = csrf_from(client.get("/login").get_data(as_text=True))
    url = f"/login?next={next_path}" if next_path else "/login"
    return client.post(url, data={"email": email, "password": password, "csrf_token": csrf})
