"""``cloudfilm import --hospital CODE`` records the objects for that registered hospital."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import select
from tests.factories import make_ct, to_bytes

from cloudfilm.cli.importer import run_import, sender_for
from cloudfilm.infrastructure.db.models import Hospital, Study
from cloudfilm.services.container import Services
from cloudfilm.services.errors import InvalidInputError, NotFoundError
from cloudfilm.services.identity.hospitals import HospitalInput


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(to_bytes(make_ct()))
    return folder


def _study_hospitals(services: Services) -> list[str]:
    with services.ingest._db.read() as session:
        return list(session.scalars(
            select(Hospital.code).join(Study, Study.hospital_id == Hospital.id)))


def test_import_records_the_named_hospital(services: Services, tmp_path: Path) -> None:
    services.hospitals.register(HospitalInput(code="H7", name="Hospital Seven",
                                              level="secondary"))
    summary = run_import(services, [_folder(tmp_path)], workers=1,
                         console=Console(file=io.StringIO()), sender=sender_for(services, "H7"))
    assert summary.stored == 1
    assert _study_hospitals(services) == ["H7"]


def test_without_hospital_the_objects_are_local_uploads(services: Services,
                                                        tmp_path: Path) -> None:
    run_import(services, [_folder(tmp_path)], workers=1, console=Console(file=io.StringIO()),
               sender=sender_for(services, None))
    assert _study_hospitals(services) == ["LOCAL"]


def test_an_unknown_or_deactivated_hospital_is_refused(services: Services) -> None:
    with pytest.raises(NotFoundError):
        sender_for(services, "NOPE")
    services.hospitals.register(HospitalInput(code="H8", name="Closed", level="primary"))
    services.hospitals.update("H8", {"active": False})
    with pytest.raises(InvalidInputError):
        sender_for(services, "H8")


def test_cli_refuses_an_unknown_hospital_in_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cloudfilm.cli.main import cli

    result = CliRunner().invoke(cli, ["import", "--data", str(tmp_path / "d"), "--hospital",
                                      "NOPE", str(_folder(tmp_path))])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "NOPE" in result.output
    assert "Traceback" not in result.output
