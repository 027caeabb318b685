"""One Redis connection pool per process, from REDIS_URL."""

from flask import Flask, current_app
from redis import Redis


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    app.extensions["redis"] = Redis.from_url(
        settings.redis_url, socket_connect_timeout=1, socket_timeout=5, health_check_interval=30
    )


def get_redis() -> Redis:
    return current_app.extensions["redis"]
