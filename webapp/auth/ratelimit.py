"""Login throttling: 10 failed attempts for one account or one address within
15 minutes lock further attempts for 15 minutes. Counters live in Redis so that every web
process agrees. The address is the client's, as forwarded by a trusted proxy
(webapp/client_address.py), so users behind one proxy do not share a lock.

An attempt is counted *before* the password is checked, so parallel guesses cannot slip
past the limit; a successful login gives its account's attempt back.
"""

import contextlib
import logging

from redis.exceptions import RedisError

from webapp.redis_client import get_redis

MAX_FAILURES = 10
WINDOW_SECONDS = 15 * 60
LOCK_SECONDS = 15 * 60
log = logging.getLogger(__name__)


def _subjects(email: str, address: str) -> list[str]:
    return [f"account:{email.strip().lower()}", f"address:{address}"]


def begin_attempt(email: str, address: str) -> int:
    """Count an attempt; returns 0 when it may go ahead, else the seconds until the lock ends."""
    redis = get_redis()
    try:
        pipe = redis.pipeline()
        for subject in _subjects(email, address):
            pipe.ttl(f"login-lock:{subject}")
        waits = [t for t in pipe.execute() if t and t > 0]
        if waits:
            return max(waits)
        pipe = redis.pipeline()
        for subject in _subjects(email, address):
            pipe.incr(f"login-attempts:{subject}")
            pipe.expire(f"login-attempts:{subject}", WINDOW_SECONDS, nx=True)  # a fixed window
        counts = pipe.execute()[::2]
    except RedisError:
        log.warning("login throttle unavailable: Redis is down")
        return 0
    over = [s for s, n in zip(_subjects(email, address), counts, strict=True) if n > MAX_FAILURES]
    if over:
        pipe = redis.pipeline()
        for subject in over:
            pipe.set(f"login-lock:{subject}", "1", ex=LOCK_SECONDS, nx=True)
        pipe.execute()
        return LOCK_SECONDS
    return 0


def succeeded(email: str, address: str) -> None:
    """A right password: the account's attempts start over, and the address gets its one back."""
    account, place = _subjects(email, address)
    with contextlib.suppress(RedisError):
        get_redis().pipeline().delete(f"login-attempts:{account}").decr(f"login-attempts:{place}").execute()
