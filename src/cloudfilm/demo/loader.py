"""Load the demo province through the archive's real doors: C-STORE and STOW-RS.

Nothing is written to the database directly: hospitals whose door is ``dimse`` associate
with their own AE title (registered as a peer first) and send C-STORE requests; the others
POST multipart/related bodies to ``/studies/{study}``. A study the archive already holds
completely (QIDO-RS ``NumberOfStudyRelatedInstances``) is skipped, so a second run sends
nothing; a study cut short by an interrupted run is sent again and its resent objects are
recognised as duplicates by the ingest pipeline.
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import httpx
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt

from cloudfilm.demo.objects import SOP_CLASSES, exam_datasets, to_part10
from cloudfilm.demo.province import NATIONAL_ID_ISSUER, Exam, Hospital, Province
from cloudfilm.services.errors import CloudfilmError, NotFoundError
from cloudfilm.services.identity.hospitals import HospitalInput, HospitalService

logger = logging.getLogger(__name__)

# One STOW-RS request carries up to this much: the archive commits once per request.
_STOW_BODY_BYTES = 16 << 20
_STATUS_OK = {0x0000, 0xB000, 0xB006, 0xB007}  # Success and the C-STORE warnings (PS3.4 B.2.3)

Progress = Callable[[Exam, int, int], None]
"""Called after each acknowledged object: (exam, objects, bytes)."""
Credentials = Callable[[Hospital], str]
"""A hospital's STOW-RS bearer token (the archive records the hospital from it)."""


class DemoLoadError(RuntimeError):
    """The archive refused or failed an object; the message says which and why."""


@dataclass(slots=True)
class LoadSummary:
    studies_planned: int = 0
    studies_skipped: int = 0
    studies_sent: int = 0
    instances_sent: int = 0
    bytes_sent: int = 0
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Target:
    """Where the archive listens."""

    dicomweb: str  # e.g. http://127.0.0.1:8042/dicomweb
    dicom_host: str
    dicom_port: int
    called_ae: str


# Province levels as the hospital registry records them: (level, grade).
_LEVELS = {"三级甲等": ("tertiary", "A"), "三级乙等": ("tertiary", "B"),
           "二级甲等": ("secondary", "A"), "二级乙等": ("secondary", "B"), "一级": ("primary", "")}


def register_hospitals(hospitals: HospitalService, province: Province) -> tuple[int, int]:
    """Register the hospitals (with where their headers carry the resident ID, so that the
    master patient index links them) and the DIMSE hospitals' AE titles; idempotent.

    The AE titles' host and port are where C-MOVE would send to; the demo hospitals do not
    listen. Returns (hospitals registered, AE titles registered) by this call.
    """
    added_hospitals = added_peers = 0
    for hospital in province.hospitals:
        try:
            view = hospitals.get(hospital.code)
        except NotFoundError:
            view = None
        if view is None or not view.level:
            level, grade = _LEVELS[hospital.level]
            view = hospitals.register(HospitalInput(
                code=hospital.code, name=hospital.name, level=level, grade=grade,
                city=hospital.city, national_id_source="other_patient_ids",
                national_id_issuer=NATIONAL_ID_ISSUER), actor="demo")
            added_hospitals += 1
        if hospital.door == "dimse" and not any(
                p.ae_title == hospital.ae_title for p in view.ae_titles):
            try:
                hospitals.add_ae_title(hospital.code, hospital.ae_title, "127.0.0.1", 104,
                                       description=hospital.name)
                added_peers += 1
            except CloudfilmError as exc:
                if exc.code != "peer-exists":  # another run registered it meanwhile: fine
                    raise
    return added_hospitals, added_peers


def held_instance_counts(client: httpx.Client, study_uids: Iterable[str]) -> dict[str, int]:
    """NumberOfStudyRelatedInstances of each study the archive holds (QIDO-RS, paged)."""
    wanted = set(study_uids)
    held: dict[str, int] = {}
    offset, page = 0, 1000
    while True:
        response = client.get("/studies", params={
            "includefield": "NumberOfStudyRelatedInstances", "limit": page, "offset": offset})
        response.raise_for_status()
        rows = response.json() if response.content else []
        for row in rows:
            uid = row.get("0020000D", {}).get("Value", [""])[0]
            if uid in wanted:
                held[uid] = int(row.get("00201208", {}).get("Value", [0])[0] or 0)
        if len(rows) < page:
            return held
        offset += page


def load_province(province: Province, target: Target, *, seed: int, workers: int = 3,
                  progress: Progress | None = None,
                  on_plan: Callable[[list[Exam]], None] | None = None,
                  credentials: Credentials | None = None,
                  stop: threading.Event | None = None) -> LoadSummary:
    """Send every exam the archive does not fully hold yet; return what was done.

    Parameters
    ----------
    workers
        Exams sent concurrently (each on its own association or HTTP connection).
    progress
        Called after each acknowledged object.
    on_plan
        Called once with the exams that will be sent (to size a progress bar).
    credentials
        Token of a STOW-RS hospital, asked once per hospital that has something to send;
        without it the HTTP door records uploads under ``LOCAL``.
    stop
        Set it to stop after the objects in flight (Ctrl-C).

    Raises
    ------
    DemoLoadError
        Only for setup problems (the archive does not answer); refused objects are listed
        in ``LoadSummary.failures``.
    """
    summary = LoadSummary(studies_planned=len(province.exams))
    with httpx.Client(base_url=target.dicomweb, timeout=120) as client:
        try:
            held = held_instance_counts(client, (e.study_uid for e in province.exams))
        except httpx.HTTPError as exc:
            raise DemoLoadError(f"the archive at {target.dicomweb} does not answer QIDO-RS: "
                                f"{exc}") from exc
        todo = [e for e in province.exams if held.get(e.study_uid, 0) < e.instance_count]
        summary.studies_skipped = len(province.exams) - len(todo)
        if on_plan is not None:
            on_plan(todo)
        lock = threading.Lock()
        tokens: dict[str, str] = {}
        if credentials is not None:
            for hospital in {e.hospital.code: e.hospital for e in todo
                             if e.hospital.door == "stow"}.values():
                tokens[hospital.code] = credentials(hospital)

        def send(exam: Exam) -> tuple[int, int]:
            if stop is not None and stop.is_set():
                return 0, 0
            if exam.hospital.door == "dimse":
                return _send_dimse(exam, target, seed, progress, stop)
            return _send_stow(client, exam, seed, progress, stop, tokens.get(exam.hospital.code))

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="demo") as pool:
            futures = {pool.submit(send, exam): exam for exam in todo}
            for future in as_completed(futures):
                exam = futures[future]
                try:
                    count, size = future.result()
                except (DemoLoadError, httpx.HTTPError, OSError) as exc:
                    with lock:
                        summary.failures.append(f"study {exam.study_uid} "
                                                f"({exam.hospital.code}): {exc}")
                    continue
                with lock:
                    summary.studies_sent += 1
                    summary.instances_sent += count
                    summary.bytes_sent += size
    return summary


def _send_stow(client: httpx.Client, exam: Exam, seed: int, progress: Progress | None,
               stop: threading.Event | None, token: str | None) -> tuple[int, int]:
    count = size = 0
    batch: list[bytes] = []

    def flush() -> None:
        nonlocal count, size
        if not batch:
            return
        boundary = uuid.uuid4().hex
        headers = {"Content-Type": f'multipart/related; type="application/dicom"; '
                                   f"boundary={boundary}",
                   "Accept": "application/dicom+json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        body = b"".join(
            b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + part
            + b"\r\n" for part in batch) + b"--" + boundary.encode() + b"--\r\n"
        response = client.post(f"/studies/{exam.study_uid}", content=body, headers=headers)
        if response.status_code not in (200, 202) or "00081198" in response.text:
            raise DemoLoadError(f"STOW-RS answered {response.status_code}: "
                                f"{response.text[:300]}")
        count += len(batch)
        size += sum(len(p) for p in batch)
        if progress is not None:
            progress(exam, len(batch), sum(len(p) for p in batch))
        batch.clear()

    pending = 0
    for ds in exam_datasets(exam, seed):
        if stop is not None and stop.is_set():
            break
        part = to_part10(ds)
        batch.append(part)
        pending += len(part)
        if pending >= _STOW_BODY_BYTES:
            flush()
            pending = 0
    flush()
    return count, size


def _nodelay(event: evt.Event) -> None:
    # Without it every C-STORE response waits ~40 ms for a delayed ACK on loopback.
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _send_dimse(exam: Exam, target: Target, seed: int, progress: Progress | None,
                stop: threading.Event | None) -> tuple[int, int]:
    ae = _scu(exam.hospital)
    assoc = ae.associate(target.dicom_host, target.dicom_port, ae_title=target.called_ae,
                         evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)])
    if not assoc.is_established:
        raise DemoLoadError(f"association {exam.hospital.ae_title} -> {target.called_ae} at "
                            f"{target.dicom_host}:{target.dicom_port} was not accepted "
                            "(is the AE title registered as a peer?)")
    count = size = 0
    try:
        for ds in exam_datasets(exam, seed):
            if stop is not None and stop.is_set():
                break
            status = assoc.send_c_store(ds)
            code = int(getattr(status, "Status", -1)) if status else -1
            if code not in _STATUS_OK:
                comment = str(getattr(status, "ErrorComment", "")) if status else "no response"
                raise DemoLoadError(f"C-STORE of {ds.SOPInstanceUID} answered 0x{code & 0xFFFF:04X}"
                                    f" {comment}")
            nbytes = _approx_size(ds)
            count += 1
            size += nbytes
            if progress is not None:
                progress(exam, 1, nbytes)
    finally:
        assoc.release()
    return count, size


def _scu(hospital: Hospital) -> AE:
    ae = AE(ae_title=hospital.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    for sop_class in SOP_CLASSES.values():
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian])
    return ae


def _approx_size(ds: Dataset) -> int:
    pixels = ds.get("PixelData")
    return len(pixels) + 2048 if isinstance(pixels, bytes) else 2048
