"""``cloudfilm demo`` leaves an AI result to look at (issue 19): the sample plug-in enabled
for the hospital of the demo's first chest CT and run on that study; it finds the painted
nodule (the demo doctor there sees it in the viewer); a rerun runs nothing again."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from cloudfilm.demo.ai import prepare
from cloudfilm.demo.loader import register_hospitals
from cloudfilm.demo.objects import exam_datasets, to_part10
from cloudfilm.demo.province import AI_NODULE, ai_demo_exam, build_province
from cloudfilm.services.access.actor import LOCAL_OPERATOR
from cloudfilm.services.archive.ingest import IngestItem, Sender
from cloudfilm.services.container import Services

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def test_demo_runs_the_sample_plugin_on_one_chest_ct(services: Services,
                                                     tmp_path: Path) -> None:
    assert services.ai is not None
    province = build_province("small", seed=2024, anchor=datetime(2026, 12, 1, 10))
    register_hospitals(services.hospitals, province)
    exam = ai_demo_exam(province)
    assert exam is not None and exam.modality == "CT" and exam.body_part == "CHEST"
    items = []
    for ds in exam_datasets(exam, 2024):
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        path.write_bytes(to_part10(ds))
        items.append(IngestItem(path))
    services.ingest.ingest_files(items, sender=Sender(exam.hospital.code, "demo", "test"))

    made = prepare(services, province)
    assert made is not None and made.ran and made.study_uid == exam.study_uid
    [found] = services.ai.results.sets(LOCAL_OPERATOR, exam.study_uid)
    x, y, z, diameter = AI_NODULE
    assert any(abs(f["centre_mm"][0] - x) < 3 and abs(f["centre_mm"][1] - y) < 3
               and abs(f["centre_mm"][2] - z) < 3 and abs(f["diameter_mm"] - diameter) < 1.5
               for f in found.findings), found.findings
    again = prepare(services, province)
    assert again is not None and not again.ran
    assert len(services.ai.results.sets(LOCAL_OPERATOR, exam.study_uid)) == 1
