"""What a resident takes home: a whole study as a DICOM media set (a zip with a DICOMDIR
that another PACS or a viewer imports), or images as JPEG (one image, or a series as a
zip).

Each download is one decision of the access policy, recorded as ``download`` in the audit
trail (through :class:`RetrieveService`) before any byte leaves. The zip is streamed:
the DICOMDIR is built from the objects' headers only (read up to the pixels into a small
temporary folder), then the stored objects are copied chunk by chunk into the stream, so
a 2 GB study never sits in memory or on the web server's disk.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from zipfile import ZIP_STORED

from pydicom.dataset import Dataset
from pydicom.fileset import FileSet
from zipstream import ZipStream

from cloudfilm.services.access.actor import Actor
from cloudfilm.services.archive.retrieve import RetrieveService, StoredObject

logger = logging.getLogger(__name__)

# A series saved as JPEGs is rendered one frame after the other while it streams; more
# frames than this is a job for the DICOM zip.
MAX_JPEG_FRAMES = 2000
JPEG_QUALITY = 90
# Type 1 attributes of the DICOMDIR's PATIENT/STUDY/SERIES/IMAGE records that hospitals
# sometimes leave empty; the record needs a value (the object itself is copied as stored).
_REQUIRED = {"PatientID": "UNKNOWN", "StudyDate": "19000101", "StudyTime": "000000",
             "StudyID": "1", "SeriesNumber": "1", "InstanceNumber": "1"}


@dataclass(frozen=True, slots=True)
class Download:
    filename: str
    media_type: str
    chunks: Iterator[bytes]
    size: int | None
    """Exact length in bytes when known before streaming (the DICOM zip), else None."""


class DownloadService:
    """Downloads of studies and images, each decided and audited once.

    Parameters
    ----------
    retrieve
        The archive's retrieval (policy decision, audit record, blob streaming, rendering).
    """

    def __init__(self, retrieve: RetrieveService) -> None:
        self._retrieve = retrieve

    def study_zip(self, actor: Actor, study_uid: str, *,
                  leave_out: frozenset[str] = frozenset()) -> Download:
        """The study as a media set: ``DICOMDIR`` at the root and the objects, as stored,
        under the file IDs it references (``PT000000/ST000000/SE000000/IM000000``).

        Raises
        ------
        NotAuthorizedError
            Not the actor's to see (or not in the archive).
        ResourceUnavailableError
            The index, the audit trail or the blob store is unavailable.
        """
        objects = [o for o in self._retrieve.locate(study_uid, actor=actor, action="download")
                   if o.series_instance_uid not in leave_out]  # e.g. AI results' series
        dicomdir, names = self._dicomdir(objects)
        stream = ZipStream(compress_type=ZIP_STORED, sized=True)
        stream.add(dicomdir, "DICOMDIR")
        for i, obj in enumerate(objects):
            # Objects a DICOMDIR cannot index (an unknown SOP class) still travel along.
            name = names.get(obj.sop_instance_uid, f"OTHER/OBJ{i:05d}.dcm")
            stream.add(self._retrieve.object_chunks(obj), name, size=obj.size)
        return Download(f"study-{study_uid[-24:]}.zip", "application/zip", iter(stream),
                        len(stream))

    def _dicomdir(self, objects: list[StoredObject]) -> tuple[bytes, dict[str, str]]:
        fileset = FileSet()
        with tempfile.TemporaryDirectory(prefix="cloudfilm-dicomdir-") as tmp:
            for obj in objects:
                header = self._retrieve.header(obj)
                _complete(header)
                try:
                    fileset.add(header)
                except ValueError as exc:  # no DICOMDIR record type for this SOP class
                    logger.info("not in DICOMDIR: %s (%s)", obj.sop_instance_uid, exc)
            root = Path(tmp, "set")
            fileset.write(root)
            names = {str(inst.SOPInstanceUID): Path(inst.path).relative_to(root).as_posix()
                     for inst in fileset}
            return (root / "DICOMDIR").read_bytes(), names

    def image_jpeg(self, actor: Actor, study_uid: str, series_uid: str, sop_uid: str,
                   frame: int = 1) -> Download:
        """One image, full size, its own window, as JPEG."""
        data = self._retrieve.rendered(study_uid, series_uid, sop_uid, actor=actor,
                                       frame=frame, quality=JPEG_QUALITY, action="download")
        return Download(f"image-{sop_uid[-16:]}-{frame}.jpg", "image/jpeg", iter([data]),
                        len(data))

    def series_jpeg_zip(self, actor: Actor, study_uid: str, series_uid: str) -> Download:
        """A series as a zip of JPEGs (one a frame, in order), rendered while streaming."""
        objects = self._retrieve.locate(study_uid, series_uid, actor=actor, action="download")
        stream = ZipStream(compress_type=ZIP_STORED)
        n = 0
        for obj in objects:
            for frame in range(1, (obj.number_of_frames or 1) + 1):
                n += 1
                if n > MAX_JPEG_FRAMES:
                    break
                stream.add(self._jpeg(obj, frame), f"{n:04d}.jpg")
        return Download(f"series-{series_uid[-24:]}.zip", "application/zip", iter(stream),
                        None)

    def _jpeg(self, obj: StoredObject, frame: int) -> Iterator[bytes]:
        yield self._retrieve.render_located(obj, frame=frame, quality=JPEG_QUALITY)


def _complete(ds: Dataset) -> None:
    for keyword, value in _REQUIRED.items():
        if not ds.get(keyword):
            setattr(ds, keyword, value)
