"""Password hashing (werkzeug's scrypt)."""

from werkzeug.security import check_password_hash, generate_password_hash

MIN_LENGTH = 8


def hash_password(password: str) -> str:
    return generate_password_hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    return check_password_hash(password_hash, password)


# A hash to check against when the account does not exist, so timing does not reveal it.
DUMMY_HASH = hash_password("not-a-real-password")
