"""Reports that arrive as DICOM objects (SR, Encapsulated PDF) through the ordinary ingest
doors: ingest calls :meth:`ReportIntake.after_index` inside its index transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from cloudfilm.infrastructure.db import report_repository
from cloudfilm.infrastructure.reports.document import ReportDocument
from cloudfilm.services.reports.recording import link_held, record_version


@dataclass(frozen=True, slots=True)
class ReportObject:
    """A report read from a DICOM object ingest just indexed."""

    document: ReportDocument
    new_object: bool
    """A SOP Instance the archive did not hold before: no report can have its key yet."""


class ReportIntake:
    """Records report objects and links held reports, in ingest's transaction: a study
    and the reports waiting for it commit together, and an SR is never stored without its
    report (nor the reverse)."""

    def __init__(self, zone: tzinfo) -> None:
        self._zone = zone

    def after_index(self, conn: Any, *, hospital_id: int, door: str,
                    entries: Sequence[ReportObject], created_studies: Sequence[Any]) -> None:
        """Link held reports to ``created_studies``, then record ``entries``.

        Raises
        ------
        NotAuthorizedError, ReportConflictError
            Fails the batch; ingest then retries object by object, so only the offending
            report object is refused.
        """
        now = datetime.now(UTC)
        keys = [k for s in created_studies
                for k in report_repository.link_keys(hospital_id, s.study_instance_uid,
                                                     s.accession_number)]
        keys += [k for e in entries
                 for k in report_repository.link_keys(hospital_id, e.document.study_instance_uid,
                                                      e.document.accession_number)]
        report_repository.lock_link_keys(conn, keys)
        link_held(conn, hospital_id=hospital_id, studies=created_studies, now=now)
        created = {s.study_instance_uid: s for s in created_studies}
        for entry in entries:
            doc = entry.document
            record_version(conn, doc, hospital_id=hospital_id, door=door, now=now,
                           zone=self._zone, study=created.get(doc.study_instance_uid),
                           new_report=entry.new_object and not doc.predecessor_keys)
