"""A hostile tenant admin against invitations (docs/reliability.md, "Membership attacks"):
learning which addresses have accounts, reaching another tenant's invitations, using a link
twice, and taking over an existing account's invitation."""

import threading

import pytest

from tests.conftest import csrf_from
from tests.invitations import invite, link_of, log_in, page_shape, visible_text
from webapp.extensions import db
from webapp.invitations import service
from webapp.models import Invitation, Membership, Tenant, User

BARRIER_SECONDS = 10


@pytest.fixture
def acme_admin(make_user, login) -> str:
    make_user("boss@acme.io", "acme", "admin")
    make_user("known@globex.io", "globex", "viewer")  # an account elsewhere on the platform
    return login("boss@acme.io")


def _count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(db.select(db.func.count()).select_from(model))


def _roles(app, email: str) -> dict[str, str]:
    with app.app_context():
        stmt = (
            db.select(Tenant.name, Membership.role)
            .select_from(Membership)
            .join(Tenant, Tenant.id == Membership.tenant_id)
            .join(User, User.id == Membership.user_id)
            .where(User.email == email)
        )
        return dict(db.session.execute(stmt).all())


def _set_revoked(app, email: str, revoked: bool) -> None:
    with app.app_context():
        invitation = db.session.scalar(db.select(Invitation).where(Invitation.email == email))
        invitation.revoked_at = invitation.created_at if revoked else None
        db.session.commit()


def test_existing_and_unknown_addresses_get_the_same_answer(app, client, acme_admin):
    known = invite(client, acme_admin, "known@globex.io", "editor")
    _set_revoked(app, "known@globex.io", True)  # each page then lists its own invitation alone
    unknown = invite(client, acme_admin, "nobody@globex.io", "editor")
    _set_revoked(app, "known@globex.io", False)
    assert known.status_code == unknown.status_code == 201
    known_link, unknown_link = link_of(known), link_of(unknown)
    known_page = page_shape(known.get_data(as_text=True), known_link, "known@globex.io")
    unknown_page = page_shape(unknown.get_data(as_text=True), unknown_link, "nobody@globex.io")
    assert known_page == unknown_page  # the whole page, but for the address and its link
    # Opening the links it made tells the admin nothing either: anonymously ...
    stranger = app.test_client()
    pages = [stranger.get(link) for link in (known_link, unknown_link)]
    assert [p.status_code for p in pages] == [200, 200]
    assert page_shape(pages[0].get_data(as_text=True), known_link, "known@globex.io") == page_shape(
        pages[1].get_data(as_text=True), unknown_link, "nobody@globex.io"
    )
    # ... or logged in as itself.
    mine = [client.get(link) for link in (known_link, unknown_link)]
    assert [p.status_code for p in mine] == [403, 403]
    assert page_shape(mine[0].get_data(as_text=True), known_link) == page_shape(
        mine[1].get_data(as_text=True), unknown_link
    )


def test_another_tenants_invitations_cannot_be_seen_revoked_or_accepted(app, client, acme_admin, make_user):
    link = link_of(invite(client, acme_admin, "ann@example.com", "admin"))
    with app.app_context():
        invitation_id = db.session.scalar(db.select(Invitation.id))
    make_user("spy@initech.io", "initech", "admin")
    spy = app.test_client()
    log_in(spy, "spy@initech.io")
    csrf = csrf_from(spy.get("/members").get_data(as_text=True))
    assert "ann@example.com" not in spy.get("/members").get_data(as_text=True)
    assert spy.post(f"/members/invitations/{invitation_id}/revoke", data={"csrf_token": csrf}).status_code == 404
    assert spy.post("/members/invitations/999999/revoke", data={"csrf_token": csrf}).status_code == 404
    assert spy.post(link, data={"csrf_token": csrf}).status_code == 403  # for another address
    with app.app_context():
        invitation = db.session.get(Invitation, invitation_id)
        assert invitation.revoked_at is None and invitation.accepted_at is None
        assert db.session.scalar(db.select(db.func.count()).select_from(Membership)) == 3
    # The invitee, acting in initech when accepting, joins acme, and only acme.
    make_user("ann@example.com", "initech", "viewer")
    ann = app.test_client()
    log_in(ann, "ann@example.com")
    assert ann.post(link, data={"csrf_token": csrf_from(ann.get(link).get_data(as_text=True))}).status_code == 303
    roles = _roles(app, "ann@example.com")
    assert roles == {"acme": "admin", "initech": "viewer"}


def _in_parallel(monkeypatch, *calls):
    """Run the calls at once, each in its thread, all past find_pending() before any goes on:
    each sees the invitation pending, as two requests racing would."""
    barrier = threading.Barrier(len(calls), timeout=BARRIER_SECONDS)
    real = service.find_pending

    def find_then_wait(token: str):
        found = real(token)
        barrier.wait()
        return found

    monkeypatch.setattr(service, "find_pending", find_then_wait)
    results: list = [None] * len(calls)

    def run(i: int) -> None:
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=BARRIER_SECONDS * 3)
        assert not thread.is_alive()
    return results


def test_two_parallel_accepts_use_the_link_once(app, client, acme_admin, make_user, monkeypatch):
    make_user("ann@example.com", "globex", "viewer")
    link = link_of(invite(client, acme_admin, "ann@example.com", "editor"))
    sessions = [app.test_client(), app.test_client()]
    tokens = []
    for session in sessions:
        log_in(session, "ann@example.com")
        tokens.append(csrf_from(session.get(link).get_data(as_text=True)))
    results = _in_parallel(
        monkeypatch,
        *[lambda s=s, t=t: s.post(link, data={"csrf_token": t}) for s, t in zip(sessions, tokens, strict=True)],
    )
    assert sorted(r.status_code for r in results) == [303, 404]
    assert _roles(app, "ann@example.com") == {"globex": "viewer", "acme": "editor"}
    with app.app_context():
        assert db.session.scalar(db.select(Invitation.accepted_at)) is not None


def test_two_parallel_account_creations_make_one_account(app, client, acme_admin, monkeypatch):
    link = link_of(invite(client, acme_admin, "new@example.com", "editor"))
    visitors = [app.test_client(), app.test_client()]
    tokens = [csrf_from(v.get(link).get_data(as_text=True)) for v in visitors]
    passwords = ["first-password", "second-password"]
    results = _in_parallel(
        monkeypatch,
        *[
            lambda v=v, t=t, p=p: v.post(link, data={"csrf_token": t, "password": p, "confirm": p})
            for v, t, p in zip(visitors, tokens, passwords, strict=True)
        ],
    )
    statuses = [r.status_code for r in results]
    assert sorted(statuses) in ([303, 404], [303, 409]), statuses
    winner = passwords[statuses.index(303)]
    assert log_in(app.test_client(), "new@example.com", winner).status_code == 302
    assert log_in(app.test_client(), "new@example.com", passwords[1 - statuses.index(303)]).status_code == 401
    assert _count(app, User) == 3


def test_an_existing_accounts_invitation_cannot_be_taken_by_creating_the_account(app, client, acme_admin):
    link = link_of(invite(client, acme_admin, "known@globex.io", "admin"))
    with app.app_context():
        before = db.session.scalar(db.select(User.password_hash).where(User.email == "known@globex.io"))
    thief = app.test_client()
    csrf = csrf_from(thief.get(link).get_data(as_text=True))
    taken = thief.post(link, data={"csrf_token": csrf, "password": "thiefs-password", "confirm": "thiefs-password"})
    assert taken.status_code == 409
    assert "known@globex.io already has an account: log in with it to accept." in visible_text(taken.get_data(True))
    assert thief.get("/").status_code == 302  # not logged in
    with app.app_context():
        assert db.session.scalar(db.select(User.password_hash).where(User.email == "known@globex.io")) == before
        assert db.session.scalar(db.select(Invitation.accepted_at)) is None
    assert _count(app, User) == 2 and _count(app, Membership) == 2
    assert log_in(app.test_client(), "known@globex.io", "thiefs-password").status_code == 401


def test_link_tokens_are_matched_whole(app, client, acme_admin):
    link = link_of(invite(client, acme_admin, "ann@example.com"))
    token = link.rsplit("/", 1)[1]
    last = "A" if token[-1] != "A" else "B"
    for variant in (token[:-1] + last, token[:-1], token + "A", token.upper(), token.lower(), token[:8]):
        if variant != token:
            assert app.test_client().get(f"/invitations/{variant}").status_code == 404, variant
    assert app.test_client().get(link).status_code == 200


def test_a_hostile_address_is_escaped_wherever_it_is_shown(app, client, acme_admin):
    email = "\"'><svg/onload=alert(1)>@evil.io"
    created = invite(client, acme_admin, email)
    assert created.status_code == 201
    link = link_of(created)
    pages = [created, client.get("/members"), app.test_client().get(link)]
    for response in pages:
        html = response.get_data(as_text=True)
        assert "<svg" not in html and "&lt;svg/onload=alert(1)&gt;@evil.io" in html
