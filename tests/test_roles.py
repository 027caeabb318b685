"""The role table is plain data: every permission a role holds has words for the 403 page."""

import itertools

from webapp.auth.roles import ACTIONS, PERMISSIONS, ROLES, roles_allowed


def test_every_permission_has_words_for_the_refusal_page():
    assert set(ACTIONS) == set(PERMISSIONS["admin"])


def test_each_role_holds_what_the_roles_below_it_hold():
    for lower, higher in itertools.pairwise(ROLES):
        assert PERMISSIONS[lower] <= PERMISSIONS[higher]
    assert roles_allowed("storage:manage") == ("editor", "admin")
