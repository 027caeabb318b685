"""Commands for `make run` on a developer machine."""

import shutil
import subprocess
import time
from urllib.parse import urlsplit

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from redis import Redis
from redis.exceptions import RedisError

from webapp.config import INSTANCE_DIR


def _reachable(url: str) -> bool:
    try:
        return bool(Redis.from_url(url, socket_connect_timeout=1).ping())
    except (RedisError, ValueError):
        return False


@click.command("local-redis")
@with_appcontext
def local_redis() -> None:
    """Print a reachable Redis URL: REDIS_URL when it answers, else a local redis-server we start."""
    url = current_app.config["SETTINGS"].redis_url
    if _reachable(url):
        click.echo(url)
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise click.ClickException("redis-server is not installed and REDIS_URL does not answer")
    parts = urlsplit(url)
    port = (parts.port or 6379) if parts.hostname in ("127.0.0.1", "localhost") else 6379
    INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "yes",
            "--dir",
            str(INSTANCE_DIR),
            "--logfile",
            str(INSTANCE_DIR / "redis.log"),
        ],
        check=True,
    )
    local = f"redis://127.0.0.1:{port}/0"
    for _ in range(50):
        if _reachable(local):
            click.echo(f"started a local redis-server on port {port} ({url} did not answer)", err=True)
            click.echo(local)
            return
        time.sleep(0.1)
    raise click.ClickException(f"started redis-server on port {port} but it does not answer")


def register(app: Flask) -> None:
    app.cli.add_command(local_redis)
