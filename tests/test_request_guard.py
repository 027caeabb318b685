"""NUL characters are refused at the door, wherever they come: query, form or body."""

from tests.conftest import bearer, csrf_from


def test_a_nul_in_the_query_is_refused_by_name(client, make_user, make_token):
    make_user("ed@acme.io", "acme", "editor")
    headers = bearer(make_token("ed@acme.io"))
    response = client.get("/api/v1/scripts?q%00ery=1", headers=headers)
    assert response.status_code == 400 and "NUL characters are not allowed (in 'qery')" in response.get_data(True)
    assert client.get("/api/v1/scripts?name=a%00b", headers=headers).status_code == 400
    assert client.get("/api/v1/scripts?name=a%2500b", headers=headers).status_code == 200  # a literal "%00"


def test_a_nul_in_a_form_field_or_a_body_is_refused(client, make_user, make_token):
    csrf = csrf_from(client.get("/login").get_data(True))
    response = client.post("/login", data={"email": "a\x00@b.io", "password": "x", "csrf_token": csrf})
    assert response.status_code == 400 and "in &#39;email&#39;" in response.get_data(True)
    make_user("ed@acme.io", "acme", "editor")
    headers = {**bearer(make_token("ed@acme.io")), "Content-Type": "application/json"}
    assert client.post("/api/v1/scripts", data='{"name": "a\\u0000"}', headers=headers).status_code == 400


def test_endpoint_bodies_reach_their_script_as_they_came(client, make_user, make_token):
    make_user("ed@acme.io", "acme", "editor")
    headers = bearer(make_token("ed@acme.io"))
    # No script serves it: a 404 (not a 400) shows the body went past the guard.
    response = client.post("/api/scripts/nowhere", data="a\x00b", headers=headers)
    assert response.status_code == 404
