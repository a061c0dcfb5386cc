"""The DIMSE listener driven by dcmtk's echoscu, storescu, findscu, movescu and getscu."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import shared_file
from tests.integration.dimse.support import (
    SCP_AE,
    SCU_AE,
    dataset_sha256,
    free_port,
    require_tool,
    running_server,
)

from cloudfilm.config import Settings
from cloudfilm.interfaces.dimse.server import DimseServer
from cloudfilm.services.access.actor import LOCAL_OPERATOR
from cloudfilm.services.container import Services

pytestmark = [pytest.mark.interop, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

# Real files in several transfer syntaxes: uncompressed (explicit, implicit), JPEG lossless,
# JPEG extended, JPEG-LS, JPEG 2000 (lossless and lossy), RLE, JPEG baseline.
FILES = [
    "ct/CT_small.dcm",
    "mr/philips_4slices/IM-0001-0001-0001.dcm",
    "compressed/CR_Fuji_RG2_JPEG-LL.dcm",
    "compressed/NM_JPEG_extended_12bit.dcm",
    "compressed/CT_JPEG-LS_nearlossless.dcm",
    "compressed/CT_693_J2KR.dcm",
    "compressed/US1_J2KI.dcm",
    "compressed/CT_RLE_multiple_fragments.dcm",
    "compressed/SC_rgb_jpeg_baseline_dcmtk.dcm",
]
ENV = {**os.environ, "TCP_NODELAY": "1"}
# CT_693_J2KR.dcm carries retired group length elements in its data set (kept by C-MOVE).
_WITH_GROUP_LENGTHS = {"1.2.276.0.7230010.3.1.4.296485376.1.1521713419.1802510"}


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=ENV)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(argv[:2])} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return result


@pytest.fixture
def scp(services: Services) -> Iterator[DimseServer]:
    services.peers.register(SCU_AE, "127.0.0.1", 104, hospital_code="H-DCMTK")
    with running_server(services) as server:
        yield server


def _files() -> list[Path]:
    return [shared_file(f) for f in FILES]


def test_echoscu(scp: DimseServer) -> None:
    _run(require_tool("echoscu"), "-aet", SCU_AE, "-aec", SCP_AE, "127.0.0.1", str(scp.port))
    refused = _run("echoscu", "-aet", "INTRUDER", "-aec", SCP_AE, "127.0.0.1",
                   str(scp.port), check=False)
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stderr


# storescu proposes uncompressed syntaxes unless told which compressed one to offer.
_PROPOSE = {
    "1.2.840.10008.1.2.4.70": "-xs", "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx", "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw", "1.2.840.10008.1.2.5": "-xr",
    "1.2.840.10008.1.2.4.80": "-xt", "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.1.99": "-xd",
}


def _store_all(scp: DimseServer, files: list[Path]) -> None:
    from pydicom import dcmread

    by_syntax: dict[str, list[str]] = {}
    for f in files:
        syntax = str(dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        by_syntax.setdefault(_PROPOSE.get(syntax, ""), []).append(str(f))
    for option, group in by_syntax.items():
        # -R: propose only the SOP classes the files need.
        _run(require_tool("storescu"), "-R", *([option] if option else []), "-aet", SCU_AE,
             "-aec", SCP_AE, "127.0.0.1", str(scp.port), *group)


def _stored_sha256(services: Services, path: Path) -> tuple[str, str]:
    """(SOP Instance UID, data set SHA-256 of the archive's stored copy)."""
    from pydicom import dcmread

    ds = dcmread(path, stop_before_pixels=True)
    obj = services.retrieve.locate(str(ds.StudyInstanceUID), None, str(ds.SOPInstanceUID),
                                   actor=LOCAL_OPERATOR)[0]
    return obj.sop_instance_uid, dataset_sha256(b"".join(services.retrieve.object_chunks(obj)))


def test_storescu_findscu_getscu_movescu_round_trip(scp: DimseServer, services: Services,
                                                    tmp_path: Path) -> None:
    from pydicom import dcmread

    files = _files()
    _store_all(scp, files)
    find = _run(require_tool("findscu"), "-S", "-aet", SCU_AE, "-aec", SCP_AE,
                "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-k", "PatientID",
                "127.0.0.1", str(scp.port))
    assert find.stderr.count("Find Response:") >= 5
    # What storescu put on the wire is what we stored (dcmtk drops e.g. trailing padding
    # from the file, so the reference is the stored copy; test_dimse_real_files checks
    # file == stored with a sender that sends files raw).
    stored = dict(_stored_sha256(services, f) for f in files)

    # C-GET each object back, letting getscu prefer the object's own syntax.
    get_dir = tmp_path / "get"
    get_dir.mkdir()
    for f in files:
        ds = dcmread(f, stop_before_pixels=True)
        prefer = _PROPOSE.get(str(ds.file_meta.TransferSyntaxUID), "").replace("-x", "+x")
        _run(require_tool("getscu"), "-S", "-aet", SCU_AE, "-aec", SCP_AE, "-od", str(get_dir),
             *([prefer] if prefer else []), "-k", "QueryRetrieveLevel=IMAGE",
             "-k", f"StudyInstanceUID={ds.StudyInstanceUID}",
             "-k", f"SOPInstanceUID={ds.SOPInstanceUID}", "127.0.0.1", str(scp.port))
    # getscu re-encodes what it writes (no bit-preserving mode): check identity and syntax
    # (it accepts implicit VR objects as explicit VR, a lossless conversion).
    def syntaxes(paths: list[Path]) -> dict[str, str]:
        out = {}
        for path in paths:
            ds = dcmread(path, stop_before_pixels=True)
            out[str(ds.SOPInstanceUID)] = str(ds.file_meta.TransferSyntaxUID).replace(
                "1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
        return out

    assert syntaxes(list(get_dir.iterdir())) == syntaxes(files)

    # C-MOVE whole studies to a dcmtk storescp registered as a destination: what arrives
    # is bit-identical to what was stored.
    studies = {str(dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in files}
    port = free_port()
    services.peers.register("STORESCP", "127.0.0.1", port, hospital_code="H-DCMTK")
    move_dir = tmp_path / "move"
    move_dir.mkdir()
    receiver = subprocess.Popen(
        [require_tool("storescp"), "-aet", "STORESCP", "-od", str(move_dir), "+xa",
         "+B", str(port)],  # +B: bit-preserving, writes the data set as received
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        for study in studies:
            _run(require_tool("movescu"), "-S", "-aet", SCU_AE, "-aec", SCP_AE,
                 "-aem", "STORESCP", "-k", "QueryRetrieveLevel=STUDY",
                 "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(scp.port))
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
    moved = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p
             for p in move_dir.iterdir()}
    assert set(moved) == set(stored)
    # Sent from the stored files untouched (interfaces/dimse/sending.py): even the retired
    # group lengths (gggg,0000) of CT_693_J2KR.dcm, which re-encoding drops (PS3.5 7.2).
    assert set(moved) >= _WITH_GROUP_LENGTHS
    for uid, path in moved.items():
        assert dataset_sha256(path) == stored[uid], path


def test_storescu_bad_input_keeps_listener_running(scp: DimseServer) -> None:
    bad = shared_file("malformed/CT_bad_meta_no_sopclass.dcm")
    result = _run(require_tool("storescu"), "-R", "-aet", SCU_AE, "-aec", SCP_AE,
                  "127.0.0.1", str(scp.port), str(bad), check=False)
    assert "Success" not in result.stdout + result.stderr or result.returncode != 0
    _run("echoscu", "-aet", SCU_AE, "-aec", SCP_AE, "127.0.0.1", str(scp.port))


def test_storescu_of_sr_and_pdf_files_their_reports(scp: DimseServer,
                                                          services: Services) -> None:
    """Reports come through the ordinary C-STORE door: dcmtk sends real SR and Encapsulated
    PDF files, and each becomes its study's report, recorded for the peer's hospital."""
    from pydicom import dcmread

    files = [shared_file("reports/basic_text_SR_latin2.dcm"),
             shared_file("reports/encapsulated_pdf_coronarography.dcm")]
    _run(require_tool("storescu"), "-aet", SCU_AE, "-aec", SCP_AE, "127.0.0.1",
         str(scp.port), *map(str, files))
    for path in files:
        study = str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)
        [report] = services.reports.study_reports(study, actor=LOCAL_OPERATOR)
        assert report.hospital_code == "H-DCMTK"
        assert report.link_state == "linked"


# A PACS that accepts only Explicit VR Little Endian (dcmtk's storescp with a configuration
# file naming that one transfer syntax for CT).
_EXPLICIT_LE_ONLY = """\
[[TransferSyntaxes]]
[ExplicitLE]
TransferSyntax1 = 1.2.840.10008.1.2.1

[[PresentationContexts]]
[CT]
PresentationContext1 = 1.2.840.10008.5.1.4.1.1.2\\ExplicitLE

[[Profiles]]
[Default]
PresentationContexts = CT
"""


def test_a_pacs_taking_only_explicit_le_receives_the_original_pixels_of_a_reencoded_ct(
        settings: Settings, tmp_path: Path) -> None:
    import io

    from pydicom import dcmread
    from tests.factories import make_ct, to_bytes

    from cloudfilm.app import build_services
    from cloudfilm.config import StorageSettings
    from cloudfilm.infrastructure.dicom.lossless import pixels_equal
    from cloudfilm.services.archive.ingest import Sender

    services = build_services(settings.model_copy(update={"storage": StorageSettings(
        compress=True, delete_grace_seconds=0)}))
    assert services.storage is not None
    ds = make_ct(size=256)
    original = to_bytes(ds)
    (tmp_path / "ct.dcm").write_bytes(original)
    services.ingest.ingest_file(tmp_path / "ct.dcm", sender=Sender(
        hospital_code="H-DCMTK", hospital_name="dcmtk", door="test"))
    assert services.storage.run_pending() == {"done": 1}
    services.peers.register(SCU_AE, "127.0.0.1", 104, hospital_code="H-DCMTK")
    port = free_port()
    services.peers.register("PACS", "127.0.0.1", port, hospital_code="H-DCMTK")
    config = tmp_path / "explicit-le.cfg"
    config.write_text(_EXPLICIT_LE_ONLY)
    out = tmp_path / "pacs"
    out.mkdir()
    receiver = subprocess.Popen(
        [require_tool("storescp"), "-aet", "PACS", "-od", str(out), "-xf", str(config),
         "Default", "+B", str(port)], env=ENV, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(0.3)
        with running_server(services) as scp:
            _run(require_tool("movescu"), "-S", "-aet", SCU_AE, "-aec", SCP_AE, "-aem", "PACS",
                 "-k", "QueryRetrieveLevel=STUDY", "-k",
                 f"StudyInstanceUID={ds.StudyInstanceUID}", "127.0.0.1", str(scp.port))
    finally:
        os.killpg(receiver.pid, 15)
        receiver.wait(timeout=10)
    [received] = list(out.iterdir())
    got = dcmread(received)
    assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert got.PixelData == ds.PixelData  # bit-identical pixels
    assert pixels_equal(received.read_bytes(), original)
    # every other element as sent, too
    assert {e.tag: e.value for e in got} == {e.tag: e.value for e in dcmread(
        io.BytesIO(original))}
    services.health._db.dispose()
