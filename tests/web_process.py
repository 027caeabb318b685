"""The Procfile's `web` process, run as written (gunicorn, its worker processes, its config file).

Its access log names the gunicorn worker process that answered each request, so a test can
tell which process served what.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.services import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
ACCESS_LINE = re.compile(r"^<(\d+)> ([A-Z]+) (\S+) (\d{3})$", re.M)


def procfile_command(process: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process:
            return command.strip()
    raise LookupError(f"no {process!r} process in the Procfile")


class WebProcess:
    def __init__(self, database_url: str, redis_url: str, **env: str):
        self.port = free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "SECRET_KEY": "test",
            "PORT": str(self.port),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "GUNICORN_CMD_ARGS": "--access-logformat '%(p)s %(m)s %(U)s %(s)s'",
            **env,
        }
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.log_path = Path(tempfile.mkstemp(prefix="test-web-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> "WebProcess":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", "exec " + procfile_command("web")],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        wait_for_port(self.port, timeout)
        self.wait_for_workers(2, timeout)
        return self

    def worker_pids(self) -> set[int]:
        """gunicorn's worker processes alive now (children of the master)."""
        assert self.proc is not None
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except FileNotFoundError:
            return set()
        return {int(pid) for pid in children.split()}

    def wait_for_workers(self, count: int, timeout: float = 30, besides: set[int] = frozenset()) -> set[int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.worker_pids() - besides
            if len(pids) >= count:
                return pids
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise TimeoutError(f"gunicorn has no {count} workers after {timeout}s:\n{self.log()}")

    def served(self) -> list[tuple[int, str, str, int]]:
        """(worker pid, method, path, status) of every request answered so far."""
        return [(int(p), m, path, int(s)) for p, m, path, s in ACCESS_LINE.findall(self.log())]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
