"""Fault tests: real processes, each test with a Redis of its own that it may restart.

They run on SQLite (the default database) unless a test brings its own PostgreSQL.
"""

from collections.abc import Iterator

import pytest

from tests.services import RedisProcess


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    server = RedisProcess().start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_process: RedisProcess) -> str:
    return redis_process.url


@pytest.fixture
def database_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/faults.db"
