"""Token callers cached per web process for endpoint calls: any change of access ends them at once.

A call to a path no script serves is answered 404 after its caller was checked (and cached),
401 once the caller is refused: no worker is needed to see which.
"""

from datetime import timedelta

import pytest
from redis import Redis
from sqlalchemy import update

from tests.conftest import bearer
from tests.services import eventually
from webapp.auth import tokens
from webapp.auth.tokens import AUTH_VERSION_KEY, digest
from webapp.extensions import db
from webapp.models import ApiToken, Membership, Tenant, User, utcnow

NOWHERE = "/api/scripts/nowhere"


def _cached(client, headers) -> None:
    assert client.get(NOWHERE, headers=headers).status_code == 404  # checked, and now cached


def test_a_removed_member_is_refused_at_once(app, client, make_user, make_token):
    make_user("ed@acme.io", "acme", "editor")
    headers = bearer(make_token("ed@acme.io"))
    _cached(client, headers)
    with app.app_context():
        db.session.delete(db.session.scalar(db.select(Membership)))
        db.session.commit()
    assert client.get(NOWHERE, headers=headers).status_code == 401


def test_a_token_revoked_in_bulk_is_refused_at_once(app, client, make_user, make_token):
    make_user("ed@acme.io", "acme", "editor")
    headers = bearer(make_token("ed@acme.io"))
    _cached(client, headers)
    with app.app_context():
        db.session.execute(update(ApiToken).values(revoked_at=utcnow()))
        db.session.commit()
    assert client.get(NOWHERE, headers=headers).status_code == 401


def test_the_last_used_stamp_changes_no_ones_access(app, client, make_user, make_token, redis_url):
    make_user("ed@acme.io", "acme", "editor")
    headers = bearer(make_token("ed@acme.io"))
    version = Redis.from_url(redis_url).get(AUTH_VERSION_KEY)
    _cached(client, headers)  # authenticate() stamps the token's last use
    with app.app_context():
        assert db.session.scalar(db.select(ApiToken.last_used_at)) is not None
    assert Redis.from_url(redis_url).get(AUTH_VERSION_KEY) == version  # so no cache was emptied


@pytest.mark.slow  # waits out the cache's lifetime
def test_a_cached_caller_outlives_a_lost_announcement_by_seconds_only(app, client, make_user, make_token, redis_url):
    make_user("ed@acme.io", "acme", "editor")
    plaintext = make_token("ed@acme.io")
    _cached(client, bearer(plaintext))
    redis = Redis.from_url(redis_url)
    version = redis.get(AUTH_VERSION_KEY)
    with app.app_context():
        token = db.session.scalar(db.select(ApiToken).where(ApiToken.token_hash == digest(plaintext)))
        tokens.revoke(token)
    # The announcement is lost: the version is put back as it was.
    redis.set(AUTH_VERSION_KEY, version) if version is not None else redis.delete(AUTH_VERSION_KEY)
    assert client.get(NOWHERE, headers=bearer(plaintext)).status_code == 404  # still cached
    eventually(lambda: client.get(NOWHERE, headers=bearer(plaintext)).status_code == 401, tokens.CACHE_SECONDS + 1)


def test_a_cached_token_is_refused_once_it_expires(app, client, make_user, monkeypatch):
    """Expiry is a matter of time, not of a commit: nothing announces it, the cache checks it."""
    make_user("ed@acme.io", "acme", "editor")
    with app.app_context():
        tenant, user = db.session.scalar(db.select(Tenant)), db.session.scalar(db.select(User))
        _, plaintext = tokens.create_token(tenant, user, "weekly", expires_in_days=7)
    _cached(client, bearer(plaintext))
    later = utcnow() + timedelta(days=7, seconds=1)
    monkeypatch.setattr(tokens, "utcnow", lambda: later)
    assert client.get(NOWHERE, headers=bearer(plaintext)).status_code == 401
