"""``cloudfilm demo``: load a small synthetic province through the real doors.

Without ``--url`` the command starts the platform in-process (HTTP and DIMSE on free
loopback ports over the data folder), loads the province, and stops it; ``cloudfilm serve``
on the same folder then shows the result. With ``--url``/``--dicom`` it loads a running
server instead; the peers are registered through the index that ``--data`` (or
``CLOUDFILM_DATABASE_URL``) names, which must be the running server's.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click

from cloudfilm.config import Settings
from cloudfilm.services.access.actor import LOCAL_OPERATOR as OPERATOR


@click.command()
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Data folder of the embedded default. [env CLOUDFILM_DATA_DIR]")
@click.option("--size", type=click.Choice(["small", "medium", "large"]), default="small",
              show_default=True, help="small: ~700 objects in well under a minute; medium: "
                                      "300-slice chest CTs (a few GB).")
@click.option("--seed", type=int, default=2024, show_default=True,
              help="Same seed, same province and UIDs: a second run adds nothing.")
@click.option("--url", default=None,
              help="DICOMweb base URL of a running server, e.g. "
                   "http://127.0.0.1:8042/dicomweb (default: start one in-process).")
@click.option("--dicom", default=None,
              help="HOST:PORT of the running server's DIMSE listener (with --url).")
@click.option("--ae-title", default=None, help="The server's AE title (with --dicom).")
@click.option("--workers", type=int, default=3, show_default=True,
              help="Exams sent concurrently.")
@click.option("--gateway", is_flag=True,
              help="Also set up a hospital gateway for the first hospital: its config "
                   "DATA/gateway/gateway.toml (run it with `cloudfilm gateway run`; `make "
                   "run` does, beside `serve`, so GET /api/v1/gateway/heartbeats shows it).")
def demo(data: Path | None, size: str, seed: int, url: str | None, dicom: str | None,
         ae_title: str | None, workers: int, gateway: bool) -> None:
    """Create a synthetic province and load it over C-STORE and STOW-RS, with its
    diagnostic reports (DICOM SR over C-STORE, FHIR DiagnosticReport over REST)."""
    from rich.console import Console

    from cloudfilm.app import build_services, configure_dicom_libraries
    from cloudfilm.cli.main import _common, _settings
    from cloudfilm.demo.loader import DemoLoadError, Target, register_hospitals
    from cloudfilm.demo.province import build_province

    console = Console(stderr=True)
    settings = _settings(**_common(data))
    dimse_port = settings.dimse.port  # the in-process listener uses a free port instead
    configure_dicom_libraries()
    if (url is None) != (dicom is None):
        raise click.UsageError("--url and --dicom go together (or neither: start in-process)")
    # Exam times count back from the start of this hour (China time): a rerun within the
    # hour produces the same bytes; later reruns skip studies already held.
    anchor = datetime.now(ZoneInfo("Asia/Shanghai")).replace(minute=0, second=0,
                                                            microsecond=0, tzinfo=None)
    province = build_province(size, seed=seed, anchor=anchor)  # type: ignore[arg-type]
    services = build_services(settings)
    hospitals, peers = register_hospitals(services.hospitals, province)
    console.print(f"[bold]cloudfilm demo[/] ({size}, seed {seed}): {len(province.hospitals)} "
                  f"hospitals, {len(province.residents)} residents, {len(province.exams)} "
                  f"exams, {province.instance_count} objects, {_report_mix(province)}; "
                  f"registered now: {hospitals} hospitals, {peers} DIMSE AE titles")
    issued: list[int] = []

    def credential(hospital: Any) -> str:
        # A short-lived credential per STOW-RS hospital, so that the archive records its
        # uploads for that hospital (revoked when the demo ends).
        new = services.credentials.issue(hospital.code, label="cloudfilm demo", actor=OPERATOR)
        issued.append(new.credential.id)
        return str(new.token)

    try:
        if url is not None and dicom is not None:
            host, _, port = dicom.rpartition(":")
            target = Target(url.rstrip("/"), host or "127.0.0.1", int(port),
                            ae_title or settings.dimse.ae_title)
            summary = _load(console, province, target, seed, workers, credential)
        else:
            with _in_process(services, settings) as target:
                summary = _load(console, province, target, seed, workers, credential)
    except DemoLoadError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        for credential_id in issued:
            services.credentials.revoke(credential_id, actor=OPERATOR)
        services.health._db.dispose()
    if gateway:
        _gateway_config(console, services, province, settings)
    portal = _portal_accounts(services, province)
    doctors = _doctor_accounts(services, province)
    admin = _admin_account(services)
    figures = _recognition_sample(services, province)
    ai_demo = _ai_sample(services, province)
    from cloudfilm.demo.dashboard import prepare

    dashboard = prepare(services, province)
    _report(console, province, summary, settings, url, dimse_port)
    _report_portal(console, portal, settings, data)
    _report_doctors(console, doctors, settings)
    _report_ai(console, ai_demo, doctors, settings)
    _report_dashboard(console, dashboard, settings)
    _report_admin(console, admin, figures, settings)
    if summary.failures:
        raise SystemExit(1)


def _gateway_config(console: Any, services: Any, province: Any, settings: Settings) -> None:
    """A gateway config for the first hospital, with a credential of its own (kept, unlike
    the load's); a rerun keeps the file and its credential."""
    folder = settings.data_dir / "gateway"
    path = folder / "gateway.toml"
    hospital = province.hospitals[0]
    if not path.exists():
        token = services.credentials.issue(hospital.code, label="demo gateway",
                                           actor=OPERATOR).token
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "# The demo's hospital gateway (cloudfilm demo --gateway): PACS -> C-STORE to\n"
            "# GATEWAY@127.0.0.1:11113 -> STOW-RS to the cloud.\n"
            f'[cloud]\nurl = "http://127.0.0.1:{settings.http.port}"\ncredential = "{token}"\n'
            '[dicom]\nae_title = "GATEWAY"\nhost = "127.0.0.1"\nport = 11113\n'
            'allowed_ae_titles = ["PACS"]\n'
            '[queue]\nfolder = "queue"\n'
            '[status]\nhost = "127.0.0.1"\nport = 8043\nheartbeat_seconds = 30\n',
            encoding="utf-8")
        path.chmod(0o600)  # it holds the hospital's credential
    console.print(f"[bold]gateway[/] for {hospital.code}: cloudfilm gateway run {path} "
                  "(status http://127.0.0.1:8043/)")


DEMO_PHONES = ("13800000001", "13800000002")


def _portal_accounts(services: Any, province: Any) -> list[tuple[str, str, int]]:
    """Give the two residents with studies at the most hospitals a portal account (phone,
    name, hospitals), registered the way a resident registers: an SMS code from the outbox,
    then name and national ID. A rerun finds the accounts already there."""
    import re

    from cloudfilm.services.errors import AlreadyExistsError, CloudfilmError

    def spread(resident: Any) -> tuple[int, int]:
        exams = [e for e in province.exams if e.resident is resident]
        return len({e.hospital.code for e in exams}), len(exams)

    chosen = sorted(province.residents, key=spread, reverse=True)[:len(DEMO_PHONES)]
    made = []
    for phone, resident in zip(DEMO_PHONES, chosen, strict=False):
        name = resident.family[0] + resident.given[0]
        try:
            services.accounts.send_sign_in_code(phone, requester="demo")
            [message] = services.sms.outbox(phone=phone, limit=1)
            code = re.search(r"\b(\d{6})\b", message.text)
            assert code is not None
            services.accounts.register_resident(phone, code.group(1), name=name,
                                                national_id=resident.national_id,
                                                requester="demo")
        except AlreadyExistsError:
            pass  # a rerun: the account is there
        except CloudfilmError as exc:
            logging.getLogger(__name__).warning("cloudfilm.demo.portal_account",
                                                extra={"error": exc.message})
            continue
        made.append((phone, name, spread(resident)[0]))
    return made


DEMO_DOCTOR_PASSWORD = "demo-doctor-2024"
DEMO_DOCTORS = ("doctor.a", "doctor.b")


def _doctor_accounts(services: Any, province: Any) -> list[tuple[str, str, str, str]]:
    """Two ready doctor accounts at the two hospitals of the demo's duplicate-exam example
    (a chest CT at one hospital 10 days before another hospital's): (user, hospital code,
    hospital name, the shared patient's national ID). A rerun finds them there."""
    from cloudfilm.demo.province import recognition_examples
    from cloudfilm.services.access.accounts import NewAccount
    from cloudfilm.services.errors import AlreadyExistsError, CloudfilmError

    pairs = recognition_examples(province)
    if not pairs:
        return []
    recent, prior = pairs[0]
    made = []
    for user, hospital, name in ((DEMO_DOCTORS[0], recent.hospital, "演示医生甲"),
                                 (DEMO_DOCTORS[1], prior.hospital, "演示医生乙")):
        try:
            services.accounts.create_account(NewAccount(
                kind="doctor", username=user, password=DEMO_DOCTOR_PASSWORD,
                display_name=name, hospital_code=hospital.code, department="放射科"),
                by=OPERATOR)
        except AlreadyExistsError:
            pass  # a rerun: the account is there
        except CloudfilmError as exc:
            logging.getLogger(__name__).warning("cloudfilm.demo.doctor_account",
                                                extra={"error": exc.message})
            continue
        made.append((user, hospital.code, hospital.name, recent.resident.national_id))
    return made


def _report_doctors(console: Any, made: list[tuple[str, str, str, str]],
                    settings: Settings) -> None:
    if not made:
        return
    console.print("\n[bold]the doctor's workstation[/] "
                  f"http://{settings.http.host}:{settings.http.port}/workstation "
                  f"(password {DEMO_DOCTOR_PASSWORD}):")
    for user, code, name, _nid in made:
        console.print(f"  {user:<9} {code} {name}")
    console.print(f"  find the patient with studies at both by national ID {made[0][3]}; "
                  "order a chest CT to see the duplicate-exam prompt")


def _ai_sample(services: Any, province: Any) -> Any:
    """The sample AI plug-in enabled and run on one chest CT (demo/ai.py)."""
    from cloudfilm.demo.ai import prepare
    from cloudfilm.services.errors import CloudfilmError

    try:
        return prepare(services, province)
    except CloudfilmError as exc:
        logging.getLogger(__name__).warning("cloudfilm.demo.ai", extra={"error": exc.message})
        return None


def _report_ai(console: Any, made: Any, doctors: list[tuple[str, str, str, str]],
               settings: Settings) -> None:
    if made is None:
        return
    who = next((user for user, code, _name, _nid in doctors if code == made.hospital), "")
    console.print(f"\n[bold]AI assistance[/] (sample lung-nodule plug-in, a demonstration, "
                  f"not a device): {made.findings} candidate(s) on chest CT {made.study_uid} "
                  f"at {made.hospital}; {who or 'a doctor there'} sees them in "
                  f"http://{settings.http.host}:{settings.http.port}/workstation/viewer?"
                  f"study={made.study_uid}")


def _report_portal(console: Any, made: list[tuple[str, str, int]], settings: Settings,
                   data: Path | None) -> None:
    if not made:
        return
    where = f" --data {data}" if data else ""
    console.print("\n[bold]the patients' portal[/] "
                  f"http://{settings.http.host}:{settings.http.port}/portal (on a phone, or "
                  "a narrow browser window):")
    for phone, name, hospitals in made:
        console.print(f"  {phone}  {name} (studies at {hospitals} hospitals)")
    console.print("  sign in with the phone number, then read the code with "
                  f"`cloudfilm sms outbox{where}`")


def _report_dashboard(console: Any, made: Any, settings: Settings) -> None:
    from cloudfilm.demo.dashboard import PASSWORD

    console.print("\n[bold]the commission's dashboard[/] "
                  f"http://{settings.http.host}:{settings.http.port}/dashboard "
                  f"(password {PASSWORD}; {made.cross_reads} cross-hospital reads):")
    for username, kind in made.accounts:
        console.print(f"  {username:<16} {kind}")
DEMO_ADMIN = ("demo.admin", "cloudfilm-demo-admin")


def _admin_account(services: Any) -> tuple[str, str] | None:
    """A platform administrator for the /admin pages (recognition rules and figures); a
    rerun finds it there. Demo only: the password is printed."""
    from cloudfilm.services.access.accounts import NewAccount
    from cloudfilm.services.errors import AlreadyExistsError, CloudfilmError

    username, password = DEMO_ADMIN
    try:
        services.accounts.create_account(NewAccount(
            kind="admin", username=username, password=password,
            display_name="演示管理员 (demo administrator)"), by=OPERATOR)
    except AlreadyExistsError:
        pass
    except CloudfilmError as exc:
        logging.getLogger(__name__).warning("cloudfilm.demo.admin_account",
                                            extra={"error": exc.message})
        return None
    return username, password


def _recognition_sample(services: Any, province: Any) -> list[Any]:
    """Exam mutual recognition in the demo: the hospital of each recent chest CT "orders"
    one again (the check finds the chest CT done 10 days before at another hospital); the
    first prompt is accepted, the second repeated (condition changed), so the figures page
    has a month to show. Once: a rerun that finds checks adds none."""
    from cloudfilm.demo.province import recognition_examples
    from cloudfilm.services.errors import CloudfilmError
    from cloudfilm.services.recognition.service import CheckRequest

    svc = services.recognition
    if svc.savings(OPERATOR):
        return list(svc.savings(OPERATOR))
    for n, (recent, _prior) in enumerate(recognition_examples(province)[:2]):
        patient = recent.resident.local_patient_id(recent.hospital, recent.hospital_index)
        try:
            result = svc.check(OPERATOR, CheckRequest(
                patient_id=patient, item_code="CT-CHEST", department="呼吸内科",
                hospital_code=recent.hospital.code))
            if result.priors:
                svc.decide(OPERATOR, result.decision_id, "accepted" if n == 0 else "repeat",
                           reason="" if n == 0 else "condition_changed")
        except CloudfilmError as exc:
            logging.getLogger(__name__).warning("cloudfilm.demo.recognition",
                                                extra={"error": exc.message})
    return list(svc.savings(OPERATOR))


def _report_admin(console: Any, admin: tuple[str, str] | None, figures: list[Any],
                  settings: Settings) -> None:
    base = f"http://{settings.http.host}:{settings.http.port}"
    if admin is not None:
        console.print(f"\n[bold]administration[/] {base}/admin (a desk browser): user "
                      f"{admin[0]}, password {admin[1]} (demo only)")
    for row in figures:
        repeats = sum(row.repeats.values())
        console.print(f"  recognition {row.month} {row.hospital_code} {row.item_code}: "
                      f"{row.checks} checks, {row.prompts} prompts, {row.accepted} accepted, "
                      f"{repeats} repeated; {row.cost_avoided_yuan:.2f} yuan and "
                      f"{row.dose_avoided_msv:.1f} mSv avoided")


def _report_mix(province: Any) -> str:
    """E.g. ``233 reports (122 FHIR, 111 SR; 27 amended, 18 sent before their images)``."""
    plans = [e.report for e in province.exams if e.report is not None]
    fhir = sum(p.kind == "fhir" for p in plans)
    amended = sum(p.amended is not None for p in plans)
    early = sum(p.before_images for p in plans)
    return (f"{len(plans)} reports ({fhir} FHIR, {len(plans) - fhir} SR; {amended} amended, "
            f"{early} sent before their images)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _in_process(services: Any, settings: Settings) -> Iterator[Any]:
    """HTTP and DIMSE on free loopback ports over ``services``, stopped on exit."""
    import uvicorn

    from cloudfilm.app import build_dimse_server, uvicorn_options
    from cloudfilm.demo.loader import DemoLoadError, Target
    from cloudfilm.interfaces.api.http import create_app

    port = _free_port()
    config = uvicorn.Config(create_app(services), host="127.0.0.1", port=port,
                            log_level="warning", access_log=False, lifespan="on",
                            **uvicorn_options(settings))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="demo-http", daemon=True)
    thread.start()
    settings.dimse.host, settings.dimse.port = "127.0.0.1", 0
    dimse = build_dimse_server(services, settings)
    dimse.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise DemoLoadError("the in-process HTTP server did not start")
            time.sleep(0.05)
        yield Target(f"http://127.0.0.1:{port}/dicomweb", "127.0.0.1", dimse.port,
                     settings.dimse.ae_title)
    finally:
        dimse.stop(grace=10)
        server.should_exit = True
        thread.join(timeout=30)


def _load(console: Any, province: Any, target: Any, seed: int, workers: int,
          credential: Any) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from cloudfilm.demo.loader import load_province

    stop = threading.Event()
    columns = (SpinnerColumn(), TextColumn("[bold]{task.description:<22}"), BarColumn(),
               MofNCompleteColumn(), TextColumn("{task.fields[mb]:>8.1f} MB"),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn())
    labels = {"CT": "chest CT", "MR": "head MR", "DX": "chest DR", "US": "abdominal US"}
    with Progress(*columns, console=console, transient=False) as bar:
        overall = bar.add_task("all objects", total=None, mb=0.0, rate="")
        tasks: dict[str, Any] = {}
        started = time.monotonic()
        lock = threading.Lock()

        def on_plan(exams: list[Any]) -> None:
            bar.update(overall, total=sum(e.instance_count for e in exams) or 1)
            if not exams:
                bar.update(overall, completed=1, rate="nothing new to send")
            for modality, label in labels.items():
                total = sum(e.instance_count for e in exams if e.modality == modality)
                if total:
                    tasks[modality] = bar.add_task(label, total=total, mb=0.0, rate="")

        def on_object(exam: Any, count: int, nbytes: int) -> None:
            with lock:
                mb = nbytes / 2**20
                bar.update(tasks[exam.modality], advance=count,
                           mb=bar.tasks[tasks[exam.modality]].fields["mb"] + mb)
                task = bar.tasks[overall]
                total_mb = task.fields["mb"] + mb
                rate = f"{(task.completed + count) / max(1e-3, time.monotonic() - started):.0f}/s"
                bar.update(overall, advance=count, mb=total_mb, rate=rate)

        try:
            return load_province(province, target, seed=seed, workers=workers,
                                 progress=on_object, on_plan=on_plan,
                                 credentials=credential, stop=stop)
        except KeyboardInterrupt:
            stop.set()
            raise


def _report(console: Any, province: Any, summary: Any, settings: Settings,
            url: str | None, dimse_port: int) -> None:
    from rich.table import Table

    from cloudfilm.demo.loader import api_base

    table = Table(title="the demo province", title_justify="left")
    for column in ("code", "hospital", "level", "city", "door", "charset", "exams", "objects"):
        table.add_column(column, justify="right" if column in ("exams", "objects") else "left",
                         no_wrap=column != "hospital",
                         min_width=12 if column == "hospital" else None)
    for hospital in province.hospitals:
        exams = [e for e in province.exams if e.hospital is hospital]
        table.add_row(hospital.code, hospital.name, hospital.level, hospital.city,
                      "C-STORE" if hospital.door == "dimse" else "STOW-RS",
                      hospital.charset, str(len(exams)),
                      str(sum(e.instance_count for e in exams)))
    console.print(table)
    console.print(f"sent {summary.instances_sent} objects ({summary.bytes_sent / 2**20:.0f} MB) "
                  f"in {summary.studies_sent} studies; {summary.studies_skipped} studies were "
                  "already held")
    failed = f", [red]{summary.reports_failed} failed[/]" if summary.reports_failed else ""
    console.print(f"sent {summary.reports_sent} report versions{failed}; "
                  f"{summary.reports_skipped} were already held")
    for failure in summary.failures[:10]:
        console.print(f"[red]failed:[/] {failure}")
    base = url or f"http://{settings.http.host}:{settings.http.port}/dicomweb"
    api = api_base(base)
    sample = province.residents[0]
    # An exam with something to read: an amended report if there is one.
    exam = next((e for e in province.exams if e.report is not None and e.report.amended),
                province.exams[0])
    console.print(
        "\n[bold]where to look[/] (after `cloudfilm serve`):\n"
        f"  studies      {base}/studies?limit=20\n"
        f"  a resident   {base}/studies?PatientName={sample.family[0]}{sample.given[0]}\n"
        f"  reports      {api}/reports?q=结节\n"
        f"  a study's    {api}/studies/{exam.study_uid}/reports (then /reports/<id>/html)\n"
        f"  timeliness   {api}/timeliness\n"
        f"  API docs     {base.rsplit('/dicomweb', 1)[0]}/docs\n"
        f"  DIMSE        findscu -S -aet {province.hospitals[0].ae_title} -aec "
        f"{settings.dimse.ae_title} 127.0.0.1 {dimse_port} -k QueryRetrieveLevel=STUDY"
    )
    from cloudfilm.demo.province import recognition_examples

    for recent, _prior in recognition_examples(province)[:1]:
        patient = recent.resident.local_patient_id(recent.hospital, recent.hospital_index)
        console.print(f"  recognition  cloudfilm recognition check --hospital "
                      f"{recent.hospital.code} --patient-id {patient} --item CT-CHEST")
