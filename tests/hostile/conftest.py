"""The in-process guard of the hostile suite: no test may log an unhandled error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def no_logged_errors(logged_errors: list[dict[str, Any]]) -> Iterator[None]:
    yield
    assert logged_errors == [], logged_errors
