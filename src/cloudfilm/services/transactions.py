"""Transactions as services use them: an unreachable database is ResourceUnavailableError."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TypeVar

from cloudfilm.infrastructure.db.session import DatabaseUnavailableError
from cloudfilm.services.errors import ResourceUnavailableError

T = TypeVar("T")


@contextmanager
def guarded(unit: AbstractContextManager[T]) -> Iterator[T]:
    """Run ``unit`` (``db.write()``, ``db.read()``) and turn a database outage, on entry,
    inside the block or at commit, into the service error every door maps (503, 0xA700)."""
    try:
        with unit as session:
            yield session
    except DatabaseUnavailableError as exc:
        raise ResourceUnavailableError(str(exc)) from exc
