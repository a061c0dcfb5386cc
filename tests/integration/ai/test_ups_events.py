"""UPS event reports for new workitems (global subscriptions, suspend), in process, on both
databases: each algorithm hears of its own workitems only, even under the same AE title."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.conftest import TEST_HTTP, TEST_SECURITY
from tests.factories import make_ct

from cloudfilm.app import build_services
from cloudfilm.config import AiSettings, Settings
from cloudfilm.interfaces.api.http import create_app
from cloudfilm.services.ai.subscriptions import GLOBAL
from cloudfilm.services.container import Services
from cloudfilm.services.errors import InvalidInputError, NotAuthorizedError

from .test_ai import ADMIN, _external, _hospitals, _ingest


@pytest.fixture
def services(db_url: str, tmp_path: Path) -> Iterator[Services]:
    built = build_services(Settings(
        data_dir=tmp_path / "data", database_url=db_url, auto_migrate=False,
        security=TEST_SECURITY, http=TEST_HTTP, ai=AiSettings(settle_seconds=0)))
    _hospitals(built)
    yield built
    built.health._db.dispose()


def _study(services: Services, tmp: Path, n: int) -> None:
    uid = f"1.2.826.0.1.3680043.8.498.77{n}"
    _ingest(services, tmp, [make_ct(patient_id=f"E{n}", study_uid=uid, instance_number=i,
                                    BodyPartExamined="CHEST") for i in (1, 2)])


def test_global_subscribers_hear_of_their_own_new_workitems(services: Services,
                                                            tmp_path: Path) -> None:
    ai = services.ai
    assert ai is not None
    with TestClient(create_app(services)) as client:
        tokens = [_external(client, name)[1]["Authorization"].removeprefix("Bearer ")
                  for name in ("engine", "rival")]
    actors = [ai.registry.actor_for_token(t) for t in tokens]
    engine, rival = actors
    assert engine is not None and rival is not None
    heard: dict[str, list[dict[str, Any]]] = {"engine": [], "rival": []}
    for name, actor in (("engine", engine), ("rival", rival)):
        ai.events.subscribe(actor, "SAME-AE", GLOBAL)  # the same AE title on purpose
        ai.events.open_channel(actor, "SAME-AE", heard[name].append)
    with pytest.raises(NotAuthorizedError):
        ai.events.subscribe(ADMIN, "ADMIN", GLOBAL)  # only an algorithm subscribes
    with pytest.raises(InvalidInputError):
        ai.events.subscribe(engine, "A" * 17, GLOBAL)

    ai.work.forget_cache()
    _study(services, tmp_path, 1)
    assert ai.work.schedule_due() == 2

    def uids(actor: object) -> set[str]:
        return {w.uid for w in ai.work.search(actor)}  # type: ignore[arg-type]

    for name, actor in (("engine", engine), ("rival", rival)):
        assert len(heard[name]) == 1
        report = heard[name][0]
        assert report["00741000"]["Value"] == ["SCHEDULED"]
        assert set(report["00001000"]["Value"]) <= uids(actor)

    ai.events.suspend(engine, "SAME-AE")  # no more new workitems for the engine
    _study(services, tmp_path, 2)
    assert ai.work.schedule_due() == 2
    assert len(heard["engine"]) == 1
    assert len(heard["rival"]) == 2
    ai.events.unsubscribe(rival, "SAME-AE", GLOBAL)
    _study(services, tmp_path, 3)
    assert ai.work.schedule_due() == 2
    assert len(heard["rival"]) == 2
