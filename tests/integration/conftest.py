"""Fixtures for the integration tests that need a Docker engine (and nothing else).

In CI (``CI=true``) a missing engine fails the Docker tests loudly; elsewhere they skip with the
reason. Every Docker test checks afterwards that no managed container and no volume is left.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from docker_support import connect, ensure_test_image, in_ci, remove_managed


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """This session's temporary folder: its containers' attempt directories lie under it, which
    tells them apart from another session's on a shared engine."""
    return str(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def docker_client(session_dir: str) -> Iterator[Any]:
    """A client of the real Docker engine (DOCKER_HOST honoured), with the test image imported
    (and kept: another session on the same engine may be using it)."""
    client, why = connect()
    if client is None:
        if in_ci():
            pytest.fail(f"CI=true but the Docker tests cannot run: {why}", pytrace=False)
        pytest.skip(f"Docker tests need a Docker engine: {why}")
    ensure_test_image(client)
    yield client
    remove_managed(client, session_dir)
    client.close()


@pytest.fixture
def docker_clean(docker_client: Any, session_dir: str) -> Iterator[Any]:
    """Yields the client; afterwards asserts no managed container of this session and no
    volume was left."""
    before = {v.name for v in docker_client.volumes.list()}
    yield docker_client
    left = remove_managed(docker_client, session_dir)
    volumes = {v.name for v in docker_client.volumes.list()} - before
    for name in volumes:
        try:
            docker_client.volumes.get(name).remove(force=True)
        except Exception:
            pass
    assert not left, f"containers left behind: {left}"
    assert not volumes, f"volumes left behind: {sorted(volumes)}"
