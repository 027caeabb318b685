"""`make run` as a developer runs it (README.md, "Two commands"), in a copy of the project:
Ctrl-C stops the redis-server it started, /metrics wants the token it generated, and the
README's admin commands work as printed (`make flask ARGS=…`) from a shell with nothing set.

The commands `make run` calls are checked on their own too: `local-redis` leaves a Redis that
already answers alone, `local-metrics-token` makes the token once and shows a scrape config once.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask

from tests.services import eventually, free_port
from webapp import devtools

ROOT = Path(__file__).resolve().parent.parent
NOT_NEEDED = {".git", ".venv", "instance", "tests", "docs", "bench", "test-artifacts"}
NOT_NEEDED_ANYWHERE = ("__pycache__", ".pytest_cache", ".ruff_cache")
MAKE_VARIABLES = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")  # of a `make test` around us


def _redis_servers_on(port: int) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "redis-server" in cmdline and f":{port}" in cmdline:
            pids.append(int(proc.name))
    return pids


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _fresh_shell_env(**extra: str) -> dict[str, str]:
    """A login shell's environment: no venv on PATH, no DATABASE_URL, REDIS_URL, METRICS_TOKEN."""
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    return {**env, **extra}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project as a clone has it, sharing this virtualenv."""
    copy = tmp_path / "project"
    copy.mkdir()
    for item in ROOT.iterdir():
        if item.name in NOT_NEEDED:
            continue
        if item.is_dir():
            shutil.copytree(item, copy / item.name, ignore=shutil.ignore_patterns(*NOT_NEEDED_ANYWHERE))
        else:
            shutil.copy2(item, copy / item.name)
    (copy / ".venv").symlink_to(Path(sys.prefix))
    return copy


def make(project: Path, *args: str) -> list[str]:
    # -o: the shared virtualenv is ready; make must not reinstall requirements into it.
    return ["make", "--no-print-directory", "-C", str(project), "-o", ".venv/.runtime", *args]


def make_flask(project: Path, args: str) -> subprocess.CompletedProcess:
    """`make flask ARGS="…"` as the README prints it, from a fresh shell."""
    command = make(project, "flask", f"ARGS={args}")
    return subprocess.run(command, env=_fresh_shell_env(), capture_output=True, text=True, timeout=120)


@pytest.fixture
def make_run(project: Path) -> Iterator[tuple[subprocess.Popen, Path, int, int]]:
    """`make run` in its own process group, as a terminal runs it; killed if a test leaves it."""
    port, redis_port = free_port(), free_port()
    log = project / "make-run.log"
    env = _fresh_shell_env(PORT=str(port), REDIS_URL=f"redis://127.0.0.1:{redis_port}/0")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            make(project, "run", "PROCESSES=web"), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc, log, port, redis_port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for pid in _redis_servers_on(redis_port):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_ctrl_c_on_make_run_stops_its_redis_and_metrics_want_the_generated_token(project, make_run):
    proc, log, port, redis_port = make_run
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return requests.get(f"{url}/healthz", timeout=5).status_code == 200
        except requests.RequestException:  # not listening yet, or its workers still booting
            return False

    eventually(up, timeout=120, what="make run serving /healthz", step=0.2)
    assert _redis_servers_on(redis_port), "make run started no redis-server on the port of REDIS_URL"

    token = (project / "instance" / "metrics_token").read_text().strip()
    printed = log.read_text()
    assert f'credentials: "{token}"' in printed and f'targets: ["127.0.0.1:{port}"]' in printed, printed
    anonymous = requests.get(f"{url}/metrics", timeout=30)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == "Bearer"
    scraped = requests.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert scraped.status_code == 200 and "script_executions_total" in scraped.text

    # The README's admin commands, from a shell where nothing is set: make run's database, and
    # its Redis (on a port of its own here), where revoking a token is announced at once.
    created = make_flask(project, "tokens create --tenant demo --email admin@example.com --name ci")
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("srt_") and len(created.stdout.split()) == 1, created.stdout
    revoked = make_flask(project, "tokens revoke 1")
    assert revoked.returncode == 0 and revoked.stdout == "revoked token 1\n", revoked.stdout + revoked.stderr
    assert "not announced" not in revoked.stderr, revoked.stderr

    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
    proc.wait(timeout=60)
    assert not _redis_servers_on(redis_port), log.read_text()
    assert not _answers(redis_port)
    assert not (project / "instance" / "redis.pid").exists()


def test_local_redis_leaves_a_redis_that_answers_alone(app: Flask, tmp_path: Path):
    pidfile, env_file = tmp_path / "redis.pid", tmp_path / "run.env"
    pidfile.write_text(f"{os.getpid()}\n")  # left by an earlier run that was killed
    result = app.test_cli_runner().invoke(args=["local-redis", "--pidfile", str(pidfile), "--env-file", str(env_file)])
    assert result.exit_code == 0, result.output
    redis_url = app.config["SETTINGS"].redis_url
    assert result.stdout == f"{redis_url}\n"
    assert not pidfile.exists()  # so make run stops nothing when it ends
    assert f"REDIS_URL=${{REDIS_URL:-{redis_url}}}" in env_file.read_text().splitlines()
    assert env_file.stat().st_mode & 0o777 == 0o600


def test_local_metrics_token_is_made_once_and_its_scrape_config_shown_once(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(devtools, "METRICS_TOKEN_FILE", tmp_path / "metrics_token")
    runner = app.test_cli_runner()
    first = runner.invoke(args=["local-metrics-token", "--port", "5123"])
    assert first.exit_code == 0, first.output
    token = first.stdout.strip()
    assert len(token) >= 40 and token == (tmp_path / "metrics_token").read_text().strip()
    assert (tmp_path / "metrics_token").stat().st_mode & 0o777 == 0o600
    assert f'credentials: "{token}"' in first.stderr and 'targets: ["127.0.0.1:5123"]' in first.stderr
    config = tmp_path / "prometheus.yml"
    config.write_text(textwrap.dedent(first.stderr[first.stderr.index("    scrape_configs:") :]))
    checked = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    again = runner.invoke(args=["local-metrics-token"])
    assert again.stdout.strip() == token and again.stderr == ""
