"""Commands for `make run` on a developer machine (README.md, "Two commands")."""

import os
import secrets
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from redis import Redis
from redis.exceptions import RedisError

from webapp.config import INSTANCE_DIR

METRICS_TOKEN_FILE = INSTANCE_DIR / "metrics_token"


def _reachable(url: str) -> bool:
    try:
        return bool(Redis.from_url(url, socket_connect_timeout=1).ping())
    except (RedisError, ValueError):
        return False


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(text)


def _write_env_file(path: Path, redis_url: str) -> None:
    """The environment `make run` gives its processes, for `make flask` in another shell. Each
    line keeps a value the caller's environment already has: `NAME=${NAME:-'value'}`."""
    values = {"REDIS_URL": redis_url, "DATABASE_URL": os.environ.get("DATABASE_URL")}
    lines = [f"{name}=${{{name}:-{shlex.quote(value)}}}" for name, value in values.items() if value]
    _write_private(path, "".join(f"{line}\n" for line in lines))


@click.command("local-redis")
@click.option(
    "--pidfile",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the pid of the redis-server started here to this file; removed when none is started.",
)
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write REDIS_URL (and DATABASE_URL when set) to this file, for `make flask`.",
)
@with_appcontext
def local_redis(pidfile: Path | None, env_file: Path | None) -> None:
    """Print a reachable Redis URL: REDIS_URL when it answers, else a local redis-server we start.

    The server runs in a session of its own, so the Ctrl-C that stops `make run`'s processes
    does not reach it: they stop first, with their Redis still there, then `make run` stops
    the server by the pid in --pidfile. A Redis that already answered is never touched."""
    url = current_app.config["SETTINGS"].redis_url
    if pidfile:
        pidfile.unlink(missing_ok=True)
    if _reachable(url):
        if env_file:
            _write_env_file(env_file, url)
        click.echo(url)
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise click.ClickException("redis-server is not installed and REDIS_URL does not answer")
    parts = urlsplit(url)
    port = (parts.port or 6379) if parts.hostname in ("127.0.0.1", "localhost") else 6379
    INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
    arguments = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(INSTANCE_DIR)]
    server = subprocess.Popen(
        [binary, *arguments, "--logfile", str(INSTANCE_DIR / "redis.log")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,  # the caller reads our stdout to its end: the server must not hold it
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    if pidfile:
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        pidfile.write_text(f"{server.pid}\n")
    local = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and server.poll() is None:
        if _reachable(local):
            if env_file:
                _write_env_file(env_file, local)
            click.echo(f"started a local redis-server on port {port} ({url} did not answer)", err=True)
            click.echo(local)
            return
        time.sleep(0.1)
    server.kill()
    if pidfile:
        pidfile.unlink(missing_ok=True)
    raise click.ClickException(f"redis-server on port {port} did not answer (see {INSTANCE_DIR / 'redis.log'})")


SCRAPE_CONFIG = """\
  /metrics needs a Bearer token; make run keeps it in {path}.
  A Prometheus scrape config (shown once; docs/monitoring.md):

    scrape_configs:
      - job_name: script-runner
        authorization:
          type: Bearer
          credentials: "{token}"
        static_configs:
          - targets: ["127.0.0.1:{port}"]
"""


@click.command("local-metrics-token")
@click.option("--port", type=int, default=5000, show_default=True, help="Where `web` listens, for the scrape config.")
def local_metrics_token(port: int) -> None:
    """Print the METRICS_TOKEN `make run` gives its processes, kept in instance/metrics_token.
    The first time, make it and show a Prometheus scrape config with it (on stderr)."""
    if not METRICS_TOKEN_FILE.exists():
        token = secrets.token_urlsafe(32)
        _write_private(METRICS_TOKEN_FILE, token + "\n")
        click.echo("\n" + SCRAPE_CONFIG.format(path=METRICS_TOKEN_FILE, token=token, port=port), err=True)
    click.echo(METRICS_TOKEN_FILE.read_text().strip())


def register(app: Flask) -> None:
    app.cli.add_command(local_redis)
    app.cli.add_command(local_metrics_token)
