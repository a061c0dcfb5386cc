"""A DIMSE listener on the ``services`` fixture (both databases) with one registered SCU."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.integration.dimse.support import HOSPITAL, SCU_AE, running_server

from cloudfilm.interfaces.dimse.server import DimseServer
from cloudfilm.services.container import Services


@pytest.fixture
def dimse(services: Services) -> Iterator[DimseServer]:
    services.peers.register(SCU_AE, "127.0.0.1", 104, hospital_code=HOSPITAL,
                            description="Test Hospital")
    with running_server(services) as server:
        yield server
