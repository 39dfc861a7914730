"""Fixtures for the backend contract suite: a Redis server with vector search.

``redis_url`` (session) starts one private server from the PyPI wheels (see
``tests/redis_server.py``), or uses ``COSTOPT_TEST_REDIS_URL`` when set.
``own_redis_server`` (per test) starts a private server the test may SIGKILL and
restart; it always comes from the wheels, since an external server cannot be
killed. Neither skips: a server that cannot start fails the test with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.redis_server import RedisServer, RedisServerError, probe

URL_ENV = "COSTOPT_TEST_REDIS_URL"


def _started() -> RedisServer:
    server = RedisServer()
    try:
        return server.start()
    except RedisServerError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis with RediSearch for the whole session (one server, many indexes)."""
    external = os.environ.get(URL_ENV)
    if external:
        problem = probe(external, timeout_s=5.0)
        if problem is not None:
            pytest.fail(
                f"{URL_ENV} is set but that server is not a usable Redis Stack: {problem}",
                pytrace=False,
            )
        yield external
        return
    server = _started()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A private server for one test, which may ``kill()`` and ``restart()`` it."""
    server = _started()
    try:
        yield server
    finally:
        server.stop()
