"""One Redis connection pool per process, from REDIS_URL."""

from flask import Flask, current_app
from redis import Redis

BLOCKING_READ_SECONDS = 90  # longer than any wait the web process makes on a result


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    app.extensions["redis"] = Redis.from_url(
        settings.redis_url, socket_connect_timeout=1, socket_timeout=5, health_check_interval=30
    )
    # Waiting on a run's result blocks for up to a minute: a short socket timeout would end
    # those waits early, so they get their own pool.
    app.extensions["redis_blocking"] = Redis.from_url(
        settings.redis_url, socket_connect_timeout=1, socket_timeout=BLOCKING_READ_SECONDS
    )


def get_redis() -> Redis:
    return current_app.extensions["redis"]


def get_blocking_redis() -> Redis:
    """For blocking reads (RQ's result waits)."""
    return current_app.extensions["redis_blocking"]
