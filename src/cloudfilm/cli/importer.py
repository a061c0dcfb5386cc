"""``cloudfilm import``: walk folders, ingest files in parallel, show progress, summarise."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from cloudfilm.services.archive.ingest import Sender
from cloudfilm.services.container import Services
from cloudfilm.services.errors import CloudfilmError

_SKIP_NAMES = {"DICOMDIR", ".DS_Store", "LICENSE", "README", "MANIFEST.md"}


@dataclass(slots=True)
class ImportSummary:
    stored: int = 0
    duplicates: int = 0
    replaced: int = 0
    held: int = 0
    failures: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)


def iter_files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_file():
            yield path
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name not in _SKIP_NAMES and not name.startswith("."):
                    yield Path(root) / name


def sender_for(services: Services, hospital_code: str | None) -> Sender:
    """The import's sender: hospital ``hospital_code`` (which must exist and be active), or
    the local uploads when none is named. Raises CloudfilmError otherwise."""
    if hospital_code is None:
        return Sender(door="import")
    from cloudfilm.services.errors import InvalidInputError

    hospital = services.hospitals.get(hospital_code)  # NotFoundError for an unknown code
    if not hospital.active:
        raise InvalidInputError(f"hospital {hospital.code} is deactivated; its objects "
                                   "cannot be imported")
    return Sender(hospital_code=hospital.code, hospital_name=hospital.name, door="import")


def run_import(services: Services, paths: list[Path], *, workers: int = 4,
               console: Console | None = None, sender: Sender | None = None) -> ImportSummary:
    console = console or Console(stderr=True)
    files = list(iter_files(paths))
    total_bytes = sum(f.stat().st_size for f in files)
    summary = ImportSummary()
    sender = sender or Sender(door="import")
    columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress, \
            ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        task = progress.add_task("import", total=total_bytes)
        counted = progress.add_task("files", total=len(files), visible=False)
        futures = {pool.submit(services.ingest.ingest_file, f, sender=sender): f for f in files}
        for future in as_completed(futures):
            path = futures[future]
            try:
                result = future.result()
            except CloudfilmError as exc:
                summary.failures.append((path, exc.message))
            except Exception as exc:  # an unexpected bug must not stop the other files
                summary.failures.append((path, f"internal error: {exc!r}"))
            else:
                if result.outcome == "stored":
                    summary.stored += 1
                elif result.outcome == "duplicate":
                    summary.duplicates += 1
                elif result.outcome == "held":
                    summary.held += 1
                else:
                    summary.replaced += 1
            progress.advance(task, path.stat().st_size if path.exists() else 0)
            progress.advance(counted)
    console.print(f"stored {summary.stored}, already present {summary.duplicates}, "
                  f"replaced {summary.replaced}, failed {summary.failed} "
                  f"(of {len(files)} files)")
    if summary.held:
        console.print(f"held for reconciliation {summary.held} (no PatientID, or a study UID "
                      "another hospital holds): see `cloudfilm reconcile list`")
    for path, reason in summary.failures:
        console.print(f"  failed: {path}: {reason}", markup=False, highlight=False)
    return summary
