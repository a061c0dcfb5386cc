"""Research export into an object-store prefix (moto's S3 server over real HTTP): every
de-identified file, the manifest and its hash land under the prefix; an interrupted export
resumes by running again (nothing sent or audited twice); each object sent is audited."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select
from tests.integration.research.test_research import (
    ADMIN,
    ADMIN2,
    _hospital,
    _ingest,
    _project,
    settings,  # noqa: F401
)
from tests.integration.research.test_research import NIDS as _NIDS
from tests.moto_s3 import moto_s3

from cloudfilm.infrastructure.db.models import AuditEvent
from cloudfilm.infrastructure.storage.factory import open_blob_store
from cloudfilm.services.container import Services


@pytest.fixture
def bucket(tmp_path: Path) -> Iterator[tuple[str, Any, str]]:
    with moto_s3() as (endpoint, admin):
        name = f"research-{uuid.uuid4().hex[:12]}"  # moto's state outlives its server
        admin.create_bucket(Bucket=name)
        yield (f"s3://{name}/lung?endpoint_url={endpoint}&region=us-east-1"
               "&access_key=testing&secret_key=testing"), admin, name


def _audited(db_url: str) -> int:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(AuditEvent)
                                    .where(AuditEvent.action == "research.export")).scalar_one())
    finally:
        engine.dispose()


def test_export_to_an_s3_prefix_resumes_and_audits_each_object(
        services: Services, db_url: str, tmp_path: Path, bucket: tuple[str, Any, str]) -> None:
    url, s3, name = bucket
    _hospital(services)
    for i, nid in enumerate(_NIDS):
        _ingest(services, tmp_path, nid, f"Zhang^San{i}", "CHEST")
    project = _project(services, body_parts=("CHEST",))
    services.research.approve(ADMIN, project)
    store = open_blob_store(url, data_dir=tmp_path)

    first = services.research.export_to_store(ADMIN2, project, store)
    assert (first.exported, first.sent, first.already_sent) == (4, 4, 0)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=name)["Contents"]}
    dicoms = sorted(k for k in keys if k.endswith(".dcm"))
    assert len(dicoms) == 4 and all(k.startswith("lung/") for k in keys)
    manifest = s3.get_object(Bucket=name, Key="lung/manifest.csv")["Body"].read()
    signed = s3.get_object(Bucket=name, Key="lung/manifest.sha256")["Body"].read()
    assert hashlib.sha256(manifest).hexdigest() == first.manifest_sha256
    assert signed.decode().startswith(first.manifest_sha256)
    for key in dicoms:  # the manifest lists each object with its hash
        body = s3.get_object(Bucket=name, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest().encode() in manifest
    assert _audited(db_url) == 4

    # Interrupted after two objects: they are gone from the target; run again to resume.
    for key in dicoms[2:]:
        s3.delete_object(Bucket=name, Key=key)
    resumed = services.research.export_to_store(ADMIN2, project, store)
    assert (resumed.sent, resumed.already_sent) == (2, 2)
    assert resumed.manifest_sha256 == first.manifest_sha256  # the same files, same manifest
    assert _audited(db_url) == 6  # only the two objects sent again
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=name)["Contents"]}
    assert sorted(k for k in keys if k.endswith(".dcm")) == dicoms
