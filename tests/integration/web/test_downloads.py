"""Downloads from the portal: the study as a DICOM media set (DICOMDIR read back by
pydicom's FileSet, every referenced file identical to what WADO-RS returns), JPEGs, and
the policy and audit trail around them."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

from fastapi.testclient import TestClient
from pydicom import dcmread
from pydicom.fileset import FileSet
from sqlalchemy import create_engine, select
from tests.integration.access.conftest import Province, province  # noqa: F401
from tests.integration.web.support import Portal
from tests.integration.web.test_portal import browser, sign_in, world  # noqa: F401

from cloudfilm.infrastructure.db import models
from cloudfilm.interfaces.api.http import DICOMWEB_PREFIX


def _downloads(portal: Portal) -> list[tuple[str, str, str]]:
    engine = create_engine(portal.province.db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(models.AuditEvent.action, models.AuditEvent.outcome,
                                       models.AuditEvent.resource_uid)
                                .where(models.AuditEvent.action == "download")).all()
    finally:
        engine.dispose()
    return [(r[0], r[1], r[2]) for r in rows]


def test_study_zip_is_a_media_set_identical_to_wado(browser: TestClient,  # noqa: F811
                                                    world: Portal,  # noqa: F811
                                                    tmp_path: Path) -> None:
    sign_in(browser, world)
    page = browser.get(f"/portal/studies/{world.ct_study}")
    assert "下载全部原始影像（DICOM，" in page.text  # the size is shown before download
    assert page.text.count("<form") == page.text.count("</form>") == 1  # the share form
    answer = browser.get(f"/portal/studies/{world.ct_study}/download.zip")
    assert answer.status_code == 200, answer.text[:300]
    assert answer.headers["content-type"] == "application/zip"
    assert int(answer.headers["content-length"]) == len(answer.content)
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    assert archive.testzip() is None
    archive.extractall(tmp_path)
    dicomdir = dcmread(tmp_path / "DICOMDIR")
    assert dicomdir.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10"
    fileset = FileSet(dicomdir)
    instances = list(fileset)
    assert len(instances) == world.slices
    assert {i.StudyInstanceUID for i in instances} == {world.ct_study}
    for inst in instances:
        ds = inst.load()  # the referenced file exists under its file ID
        wado = browser.get(f"{DICOMWEB_PREFIX}/studies/{world.ct_study}/series/"
                           f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}",
                           headers={"accept": 'multipart/related; type="application/dicom"'})
        assert wado.status_code == 200
        assert Path(inst.path).read_bytes() in wado.content
    assert sorted(archive.namelist())[0] == "DICOMDIR"
    assert ("download", "allowed", world.ct_study) in _downloads(world)


def test_jpegs_and_refusals_are_audited(browser: TestClient, world: Portal) -> None:  # noqa: F811
    p = world.province
    sign_in(browser, world)
    series = browser.get(f"/portal/studies/{world.ct_study}/series/{world.ct_series}/jpeg.zip")
    assert series.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(series.content)).namelist()
    assert names == [f"{i:04d}.jpg" for i in range(1, world.slices + 1)]
    first = zipfile.ZipFile(io.BytesIO(series.content)).read("0001.jpg")
    assert first[:2] == b"\xff\xd8"
    study = browser.get(f"/portal/studies/{world.ct_study}").text
    found = re.search(r'src="/portal/thumbs/([0-9.]+)/([0-9.]+)/([0-9.]+)"', study)
    assert found
    one = browser.get(f"/portal/images/{found.group(1)}/{found.group(2)}/{found.group(3)}/1.jpg")
    assert one.status_code == 200 and one.content[:2] == b"\xff\xd8"
    assert "attachment" in one.headers["content-disposition"]
    assert ("download", "allowed", found.group(3)) in _downloads(world)
    # Someone else's study: refused (narrowed to R1, R2's study), and recorded as refused.
    other_series, other_sop = p.uids[p.sb2]
    refused = browser.get(f"/portal/studies/{p.sb2}/download.zip?for={p.r1}")
    assert refused.status_code == 403
    assert browser.get(f"/portal/images/{p.sb2}/{other_series}/{other_sop}/1.jpg"
                       f"?for={p.r1}").status_code == 403
    assert browser.get(f"/portal/studies/{p.sb2}/series/{other_series}/jpeg.zip"
                       f"?for={p.r1}").status_code == 403
    events = _downloads(world)
    assert ("download", "denied", p.sb2) in events
    assert ("download", "allowed", world.ct_series) in events
    # Signed out: no download at all.
    browser.cookies.clear()
    gone = browser.get(f"/portal/studies/{world.ct_study}/download.zip")
    assert gone.status_code == 303
