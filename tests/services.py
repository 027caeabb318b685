"""Real backing services for tests: a private redis-server and a throwaway PostgreSQL 15."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _pg_bin() -> Path:
    """The newest PostgreSQL server installed (Debian 12 ships 15)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def eventually(check, timeout: float = 5.0, what: str = "the condition", step: float = 0.05):
    """check()'s first truthy value, retried every `step` until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not true after {timeout}s")
        time.sleep(step)


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {timeout}s")


class RedisProcess:
    """A redis-server on a free port that a test may stop and start again (on the same port,
    without its data: no persistence, like a Redis that lost everything)."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make test installs it)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = tempfile.mkdtemp(prefix="test-redis-")
        self.command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        self.command += ["--appendonly", "no", "--dir", self.workdir]
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RedisProcess":
        self.proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server on a free port; yields its URL."""
    server = RedisProcess().start()
    try:
        yield server.url
    finally:
        server.close()


def _as_postgres(*args: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)


class PostgresProcess:
    """A fresh PostgreSQL 15 cluster on a free port, which a test may restart."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError("PostgreSQL is not installed (make test installs it)")
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="test-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
        self.data, self.logfile = self.workdir / "data", self.workdir / "log"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/test"

    def _run(self, *args: str) -> None:
        subprocess.run(_as_postgres(*args), check=True, capture_output=True)

    def create(self) -> "PostgresProcess":
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        self._run(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "test")
        return self

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.logfile), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"), capture_output=True
        )

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """A fresh PostgreSQL 15 cluster on a free port; yields a SQLAlchemy URL to database `test`."""
    server = PostgresProcess().create()
    try:
        yield server.url
    finally:
        server.close()


class ServiceProcess:
    """One of our processes (`python -m MODULE`) against the test database and Redis."""

    module = ""

    def __init__(self, database_url: str, redis_url: str, **env: str):
        self.env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "SECRET_KEY": "test", **env}
        self.proc: subprocess.Popen | None = None
        self.name = ""
        self.log_path = Path(tempfile.mkstemp(prefix=f"test-{self.module}-", suffix=".log")[1])

    def ready_name(self, redis) -> str | None:
        """The process's name once it is ready to work, else None."""
        raise NotImplementedError

    def start(self, timeout: float = 30):
        from redis import Redis

        redis = Redis.from_url(self.env["REDIS_URL"])
        self._before(redis)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parent.parent,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.module} exited with {self.proc.returncode}:\n{self.log()}")
            name = self.ready_name(redis)
            if name:
                self.name = name
                return self
            time.sleep(0.05)
        raise TimeoutError(f"{self.module} was not ready within {timeout}s:\n{self.log()}")

    def _before(self, redis) -> None:
        pass

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


# The load and fault tests drive one tenant from many connections: the platform is what they
# measure, not the per-tenant cap of runs in flight or rate of calls (tests/test_fairness.py
# covers those).
SINGLE_TENANT_LOAD = {"TENANT_MAX_RUNS": "1000", "TENANT_ENDPOINT_RATE": "0"}


class WorkerProcess(ServiceProcess):
    """`python -m worker`; ready once it has registered with RQ."""

    module = "worker"

    def _before(self, redis) -> None:
        from rq import Worker

        self._known = {w.name for w in Worker.all(connection=redis)}

    def ready_name(self, redis) -> str | None:
        from rq import Worker

        fresh = {w.name for w in Worker.all(connection=redis)} - self._known
        return fresh.pop() if fresh else None


class SchedulerProcess(ServiceProcess):
    """`python -m worker.scheduler`; ready once it has sent a heartbeat."""

    module = "worker.scheduler"

    def ready_name(self, redis) -> str | None:
        mine = [n.decode() for n in redis.hkeys("sr:scheduler:heartbeat") if n.decode().endswith(f".{self.proc.pid}")]
        return mine[0] if mine else None


def admin_token(app) -> str:
    """A tenant with an admin member on a fresh database, and an API token of theirs (benches)."""
    from webapp.auth.tokens import create_token
    from webapp.extensions import db
    from webapp.models import Membership, Tenant, User

    with app.app_context():
        db.create_all()
        tenant, user = Tenant(name="bench"), User(email="b@bench.io", password_hash="x")
        db.session.add_all([tenant, user, Membership(user=user, tenant=tenant, role="admin")])
        db.session.commit()
        return create_token(tenant, user, "bench", "admin")[1]
