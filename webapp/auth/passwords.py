"""Password hashing (werkzeug's scrypt)."""

from werkzeug.security import check_password_hash, generate_password_hash

from webapp.models import User

MIN_LENGTH = 8


def hash_password(password: str) -> str:
    return generate_password_hash(password)


def new_password_errors(password: str, confirm: str) -> dict[str, str]:
    """A new password typed twice, as forms ask for it: the message of each field at fault."""
    if len(password) < MIN_LENGTH:
        return {"password": f"The password must be at least {MIN_LENGTH} characters."}
    if confirm != password:
        return {"confirm": "The two passwords differ."}
    return {}


def set_password(user: User, password: str) -> None:
    """A new password ends every session of the user (the caller commits; one that should stay
    logged in logs in again: webapp/auth/views.py `change_password`)."""
    user.password_hash = hash_password(password)
    user.end_sessions()


def verify_password(password_hash: str, password: str) -> bool:
    return check_password_hash(password_hash, password)


# A hash to check against when the account does not exist, so timing does not reveal it.
DUMMY_HASH = hash_password("not-a-real-password")
