"""Login, logout, throttling, sessions and cookies, API tokens (headers: test_web_headers.py)."""

from tests.conftest import PASSWORD, bearer, csrf_from


def _login_form(client) -> str:
    return csrf_from(client.get("/login").get_data(as_text=True))


def test_pages_redirect_to_login(client):
    response = client.get("/scripts")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=/scripts")


def test_login_and_logout(client, make_user, login):
    make_user("ed@acme.io")
    csrf = login("ed@acme.io")
    page = client.get("/").get_data(as_text=True)
    assert "ed@acme.io" in page and "Dashboard" in page
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 302
    assert client.get("/").status_code == 302


def test_logout_ends_copies_of_the_session_cookie_and_other_sessions(app, client, make_user, login):
    make_user("ed@acme.io")
    csrf = login("ed@acme.io")
    stolen = client.get_cookie("session").value  # a copy taken while logged in
    other = app.test_client()  # the same account logged in elsewhere
    other_csrf = _login_form(other)
    other.post("/login", data={"email": "ed@acme.io", "password": PASSWORD, "csrf_token": other_csrf})
    assert other.get("/").status_code == 200
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 302
    thief = app.test_client()
    thief.set_cookie("session", stolen)
    assert thief.get("/").status_code == 302 and other.get("/").status_code == 302


def test_login_follows_only_local_next(client, make_user):
    make_user("ed@acme.io")
    token = _login_form(client)
    response = client.post(
        "/login?next=//evil.example/x", data={"email": "ed@acme.io", "password": PASSWORD, "csrf_token": token}
    )
    assert response.headers["Location"] == "/"
    client.post("/logout", data={"csrf_token": csrf_from(client.get("/").get_data(as_text=True))})
    token = _login_form(client)
    response = client.post(  # browsers read a backslash as a slash: "//evil.example/x"
        "/login?next=/\\evil.example/x", data={"email": "ed@acme.io", "password": PASSWORD, "csrf_token": token}
    )
    assert response.headers["Location"] == "/"


def test_logout_follows_only_local_next(client, make_user, login):
    make_user("ed@acme.io")
    csrf = login("ed@acme.io")
    response = client.post("/logout", data={"csrf_token": csrf, "next": "//evil.example/x"})
    assert response.headers["Location"] == "/"


def test_wrong_password_is_refused_without_saying_which_part(client, make_user):
    make_user("ed@acme.io")
    token = _login_form(client)
    wrong_pw = client.post("/login", data={"email": "ed@acme.io", "password": "nope", "csrf_token": token})
    no_user = client.post("/login", data={"email": "who@acme.io", "password": "nope", "csrf_token": token})
    assert wrong_pw.status_code == no_user.status_code == 401
    assert "Wrong email or password." in wrong_pw.get_data(as_text=True)
    assert "Wrong email or password." in no_user.get_data(as_text=True)


def test_login_without_csrf_token_is_refused(client, make_user):
    make_user("ed@acme.io")
    response = client.post("/login", data={"email": "ed@acme.io", "password": PASSWORD})
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)


def test_ten_failures_lock_the_account_for_everyone(client, app, make_user):
    make_user("ed@acme.io")
    token = _login_form(client)
    for _ in range(10):
        client.post("/login", data={"email": "ed@acme.io", "password": "bad", "csrf_token": token})
    locked = client.post("/login", data={"email": "ed@acme.io", "password": PASSWORD, "csrf_token": token})
    assert locked.status_code == 429
    assert "Too many failed attempts" in locked.get_data(as_text=True)
    # Another address is locked out of this account too.
    other = app.test_client()
    other_token = _login_form(other)
    response = other.post(
        "/login",
        data={"email": "ed@acme.io", "password": PASSWORD, "csrf_token": other_token},
        environ_base={"REMOTE_ADDR": "10.9.9.9"},
    )
    assert response.status_code == 429


def test_ten_failures_from_one_address_lock_that_address(client, make_user):
    make_user("ed@acme.io")
    token = _login_form(client)
    for i in range(10):
        client.post("/login", data={"email": f"guess{i}@acme.io", "password": "bad", "csrf_token": token})
    response = client.post("/login", data={"email": "ed@acme.io", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 429


def _session_cookie(client) -> str | None:
    cookie = client.get_cookie("session")
    return cookie.value if cookie else None


def test_session_is_renewed_at_login(app, client, make_user):
    """Session fixation: whatever session the browser had before login (an attacker's, say)
    is replaced, and that old cookie never becomes a logged-in one."""
    make_user("ed@acme.io")
    token = _login_form(client)
    with client.session_transaction() as session:
        session["planted"] = "by an attacker"
    before = _session_cookie(client)
    client.post("/login", data={"email": "ed@acme.io", "password": PASSWORD, "csrf_token": token})
    after = _session_cookie(client)
    assert before and after and after != before
    with client.session_transaction() as session:
        assert "planted" not in session
        assert session.get("_user_id")
        assert session.get("csrf_token") != token  # the pre-login CSRF token is gone too
    attacker = app.test_client()
    attacker.set_cookie("session", before)
    assert attacker.get("/scripts").status_code == 302  # the planted session is still anonymous


def test_session_cookie_flags(client, make_user):
    make_user("ed@acme.io")
    token = _login_form(client)
    response = client.post("/login", data={"email": "ed@acme.io", "password": PASSWORD, "csrf_token": token})
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    secure_client = client.application.test_client()
    secure_token = csrf_from(secure_client.get("/login", base_url="https://localhost").get_data(as_text=True))
    secure = secure_client.post(
        "/login",
        data={"email": "ed@acme.io", "password": PASSWORD, "csrf_token": secure_token},
        base_url="https://localhost",
        headers={"Referer": "https://localhost/login"},
    )
    assert "Secure" in secure.headers["Set-Cookie"]


def test_every_page_carries_the_csrf_meta_tag(client, make_user, login):
    make_user("ed@acme.io", role="admin")
    login("ed@acme.io")
    for url in ["/", "/scripts", "/scripts/new", "/tokens", "/members"]:
        assert '<meta name="csrf-token" content="' in client.get(url).get_data(as_text=True), url


def test_the_window_is_fixed_and_the_lock_says_when_it_ends(client, app, make_user, redis_url):
    from redis import Redis

    make_user("ed@acme.io")
    redis = Redis.from_url(redis_url)
    token = _login_form(client)
    client.post("/login", data={"email": "ed@acme.io", "password": "bad", "csrf_token": token})
    first_ttl = redis.ttl("login-attempts:account:ed@acme.io")
    assert 0 < first_ttl <= 900
    redis.expire("login-attempts:account:ed@acme.io", 100)  # as if 800 s had passed
    client.post("/login", data={"email": "ed@acme.io", "password": "bad", "csrf_token": token})
    assert redis.ttl("login-attempts:account:ed@acme.io") <= 100  # later failures do not extend it
    for _ in range(9):
        client.post("/login", data={"email": "ed@acme.io", "password": "bad", "csrf_token": token})
    locked = client.post("/login", data={"email": "ed@acme.io", "password": PASSWORD, "csrf_token": token})
    assert locked.status_code == 429
    assert 800 < int(locked.headers["Retry-After"]) <= 900
    assert "Try again in 15 minutes" in locked.get_data(as_text=True)


def test_parallel_guesses_cannot_pass_the_limit(app, make_user):
    from concurrent.futures import ThreadPoolExecutor

    make_user("ed@acme.io")

    def guess(i: int) -> int:
        c = app.test_client()
        token = _login_form(c)
        return c.post("/login", data={"email": "ed@acme.io", "password": f"bad{i}", "csrf_token": token}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(guess, range(30)))
    assert codes.count(401) <= 10 and codes.count(429) >= 20


def test_successful_logins_do_not_lock_a_shared_address(app, make_user):
    for i in range(12):
        make_user(f"user{i}@acme.io")
    for i in range(12):
        c = app.test_client()
        token = _login_form(c)
        response = c.post("/login", data={"email": f"user{i}@acme.io", "password": PASSWORD, "csrf_token": token})
        assert response.status_code == 302, i


def test_api_tokens_are_matched_whole_and_stored_only_hashed(app, client, make_user, make_token):
    import hashlib

    from webapp.extensions import db

    make_user("ed@acme.io")
    token = make_token("ed@acme.io")
    assert client.get("/api/v1/scripts", headers=bearer(token)).status_code == 200
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for wrong in (flipped, token[:-1], token + "x", token.upper(), " " + token[4:], "srt_", "Bearer"):
        response = client.get("/api/v1/scripts", headers=bearer(wrong))
        assert response.status_code == 401, wrong
    # Only the SHA-256 digest is kept: the token appears nowhere in the database.
    with app.app_context():
        tables = {
            t.name: [tuple(map(str, row)) for row in db.session.execute(t.select())] for t in db.metadata.sorted_tables
        }
        stored = db.session.execute(db.text("SELECT token_hash FROM api_tokens")).scalar_one()
    assert stored == hashlib.sha256(token.encode()).hexdigest()
    assert not [name for name, rows in tables.items() if any(token in cell for row in rows for cell in row)]


def test_a_revoked_token_or_a_departed_member_is_refused_at_once(app, client, make_user, make_token):
    from webapp.auth.tokens import revoke
    from webapp.extensions import db
    from webapp.models import ApiToken, Membership

    make_user("ed@acme.io")
    kept, revoked = make_token("ed@acme.io"), make_token("ed@acme.io")
    with app.app_context():
        revoke(db.session.scalars(db.select(ApiToken).order_by(ApiToken.id.desc())).first())
    assert client.get("/api/v1/scripts", headers=bearer(revoked)).status_code == 401
    assert client.get("/api/v1/scripts", headers=bearer(kept)).status_code == 200
    with app.app_context():
        db.session.execute(db.delete(Membership))
        db.session.commit()
    assert client.get("/api/v1/scripts", headers=bearer(kept)).status_code == 401


def test_an_api_token_opens_no_page_and_no_form(app, client, make_user, make_token):
    """A short-lived admin token must not mint a lasting one, or invite an admin, through the
    HTML forms (whose CSRF token any anonymous visitor can get from /login)."""
    from webapp.extensions import db
    from webapp.models import ApiToken, Invitation

    make_user("boss@acme.io", "acme", "admin")
    token = bearer(make_token("boss@acme.io"))
    csrf = csrf_from(client.get("/login").get_data(as_text=True))
    assert client.get("/tokens", headers=token).status_code == 302  # to the login page
    made = client.post("/tokens", headers=token, data={"csrf_token": csrf, "name": "backdoor", "role": "admin"})
    invited = client.post(
        "/members/invitations", headers=token, data={"csrf_token": csrf, "email": "m@evil.example", "role": "admin"}
    )
    assert (made.status_code, invited.status_code) == (302, 302)
    assert made.headers["Location"].startswith("/login")
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(ApiToken)) == 1
        assert db.session.scalar(db.select(db.func.count()).select_from(Invitation)) == 0
    assert client.get("/api/v1/scripts", headers=token).status_code == 200  # the API it is for


def test_a_removed_members_tokens_stay_ended_when_they_come_back(app, client, make_user, make_token, login):
    from webapp.extensions import db
    from webapp.models import Membership, User

    make_user("boss@acme.io", "acme", "admin")
    make_user("ci@acme.io", "acme", "editor")
    handed_out = bearer(make_token("ci@acme.io"))
    assert client.get("/api/v1/scripts", headers=handed_out).status_code == 200
    csrf = login("boss@acme.io")
    with app.app_context():
        membership = db.session.scalar(db.select(Membership).join(User).where(User.email == "ci@acme.io"))
        membership_id = membership.id
    assert client.post(f"/members/{membership_id}/remove", data={"csrf_token": csrf}).status_code == 303
    make_user("ci@acme.io", "acme", "viewer")  # invited again later
    assert client.get("/api/v1/scripts", headers=handed_out).status_code == 401
