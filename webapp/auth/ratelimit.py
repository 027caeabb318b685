"""Login throttling (SPEC §3): 10 failures for one account or one address within 15 minutes
lock further attempts for 15 minutes. Counters live in Redis so every web process agrees."""

import contextlib
import logging

from redis.exceptions import RedisError

from webapp.redis_client import get_redis

MAX_FAILURES = 10
WINDOW_SECONDS = 15 * 60
log = logging.getLogger(__name__)


def _keys(email: str, address: str) -> list[str]:
    return [f"login-fail:account:{email.strip().lower()}", f"login-fail:address:{address}"]


def is_locked(email: str, address: str) -> bool:
    try:
        counts = get_redis().mget(_keys(email, address))
    except RedisError:
        log.warning("login throttle unavailable: Redis is down")
        return False
    return any(int(c or 0) >= MAX_FAILURES for c in counts)


def record_failure(email: str, address: str) -> None:
    try:
        pipe = get_redis().pipeline()
        for key in _keys(email, address):
            pipe.incr(key)
            pipe.expire(key, WINDOW_SECONDS)  # the lock lasts 15 minutes after the last failure
        pipe.execute()
    except RedisError:
        log.warning("could not record a failed login: Redis is down")


def clear_account(email: str) -> None:
    with contextlib.suppress(RedisError):
        get_redis().delete(_keys(email, "")[0])
