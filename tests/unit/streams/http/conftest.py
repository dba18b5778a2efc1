from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.http1 import Served, serve


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    """The HTTP/1.1 layer serving tests/support/http1.py's echo application on a free port."""
    async with serve() as running:
        yield running
