"""Fault tests: real processes, each test with a Redis of its own that it may restart.

They run on SQLite (the default database) unless a test brings its own PostgreSQL.
"""

from collections.abc import Iterator

import pytest

from tests.services import PostgresProcess, RedisProcess


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    server = RedisProcess().start()
    yield server
    server.close()


@pytest.fixture
def postgres() -> Iterator[PostgresProcess]:
    """A PostgreSQL of the test's own, which it may stop and start (its `database_url` then
    returns `postgres.url`)."""
    server = PostgresProcess().create()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_process: RedisProcess) -> str:
    return redis_process.url


@pytest.fixture
def database_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/faults.db"
