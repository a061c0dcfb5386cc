"""``cloudfilm hospitals ...`` and ``cloudfilm residents ...``: the identity registry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cloudfilm.services.access.actor import LOCAL_OPERATOR as OPERATOR
from cloudfilm.services.errors import CloudfilmError

data_option = click.option("--data", type=click.Path(path_type=Path), default=None,
                           help="Data folder of the embedded default [env CLOUDFILM_DATA_DIR]")


def _services(data: Path | None) -> Any:
    from cloudfilm.app import build_services
    from cloudfilm.cli.main import _common, _settings

    return build_services(_settings(**_common(data)))


def _run(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except CloudfilmError as exc:
        raise click.ClickException(exc.message) from exc


@click.group()
def hospitals() -> None:
    """Hospital registry: hospitals, their AE titles and API credentials."""


@hospitals.command("add")
@data_option
@click.argument("code")
@click.argument("name")
@click.option("--level", type=click.Choice(["tertiary", "secondary", "primary"]), required=True)
@click.option("--grade", default="", help="A, B, C or special")
@click.option("--city", default="")
@click.option("--county", default="")
@click.option("--national-id-source", default="none",
              type=click.Choice(["none", "patient_id", "other_patient_ids", "tag"]),
              help="Where its DICOM headers carry the national ID.")
@click.option("--national-id-issuer", default="", help="IssuerOfPatientID of that item.")
@click.option("--national-id-tag", default="", help="GGGGEEEE when the source is 'tag'.")
@click.option("--public/--private", default=True, show_default=True,
              help="Publicly owned (the commission's coverage figure).")
@click.option("--contact-phone", default="", help="Phone that upload alerts are texted to.")
@click.option("--alert-webhook", default="", help="URL that upload alerts are posted to.")
def hospitals_add(data: Path | None, code: str, name: str, **fields: Any) -> None:
    """Register hospital CODE called NAME."""
    from cloudfilm.services.identity.hospitals import HospitalInput

    view = _run(lambda: _services(data).hospitals.register(
        HospitalInput(code=code, name=name, **fields), actor=OPERATOR))
    click.echo(f"registered {view.code} ({view.level} {view.grade}) {view.name}")


@hospitals.command("update")
@data_option
@click.argument("code")
@click.option("--name")
@click.option("--level", type=click.Choice(["tertiary", "secondary", "primary"]))
@click.option("--grade")
@click.option("--city")
@click.option("--county")
@click.option("--active/--inactive", default=None)
@click.option("--national-id-source",
              type=click.Choice(["none", "patient_id", "other_patient_ids", "tag"]))
@click.option("--national-id-issuer")
@click.option("--national-id-tag")
@click.option("--public/--private", default=None)
@click.option("--contact-phone")
@click.option("--alert-webhook")
def hospitals_update(data: Path | None, code: str, **fields: Any) -> None:
    """Change fields of hospital CODE (--inactive stops its credentials)."""
    changes = {k: v for k, v in fields.items() if v is not None}
    view = _run(lambda: _services(data).hospitals.update(code, changes, actor=OPERATOR))
    click.echo(f"updated {view.code}: {', '.join(sorted(changes)) or 'nothing'}")


@hospitals.command("list")
@data_option
def hospitals_list(data: Path | None) -> None:
    """List hospitals with their AE titles."""
    for h in _run(lambda: _services(data).hospitals.list()):
        aes = ",".join(p.ae_title for p in h.ae_titles) or "-"
        click.echo(f"{h.code:<14} {'active' if h.active else 'inactive':<8} "
                   f"{h.level:<9} {h.grade:<7} {h.city:<10} {aes:<20} {h.name}")


@hospitals.command("add-ae")
@data_option
@click.argument("code")
@click.argument("ae_title")
@click.argument("host")
@click.argument("port", type=int)
def hospitals_add_ae(data: Path | None, code: str, ae_title: str, host: str, port: int) -> None:
    """Register AE_TITLE at HOST:PORT for hospital CODE."""
    peer = _run(lambda: _services(data).hospitals.add_ae_title(code, ae_title, host, port))
    click.echo(f"registered {peer.ae_title} at {peer.host}:{peer.port} for {code}")


@hospitals.command("issue-credential")
@data_option
@click.argument("code")
@click.option("--label", default="")
def hospitals_issue(data: Path | None, code: str, label: str) -> None:
    """Issue an API credential for CODE; the token is printed once."""
    issued = _run(lambda: _services(data).credentials.issue(code, label=label, actor=OPERATOR))
    click.echo(f"credential {issued.credential.id} for {code}: {issued.token}")
    click.echo("store it now: only its hash is kept", err=True)


@hospitals.command("credentials")
@data_option
@click.argument("code")
def hospitals_credentials(data: Path | None, code: str) -> None:
    """List CODE's credentials (prefixes only)."""
    for c in _run(lambda: _services(data).credentials.list(code)):
        state = f"revoked {c.revoked_at:%Y-%m-%d}" if c.revoked_at else "live"
        click.echo(f"{c.id:<6} {c.token_prefix}...  {state:<18} {c.label}")


@hospitals.command("rotate-credential")
@data_option
@click.argument("credential_id", type=int)
def hospitals_rotate(data: Path | None, credential_id: int) -> None:
    """Replace a credential by a new one (the old one stops working now)."""
    issued = _run(lambda: _services(data).credentials.rotate(credential_id, actor=OPERATOR))
    click.echo(f"credential {issued.credential.id}: {issued.token}")


@hospitals.command("revoke-credential")
@data_option
@click.argument("credential_id", type=int)
def hospitals_revoke(data: Path | None, credential_id: int) -> None:
    """Revoke a credential."""
    _run(lambda: _services(data).credentials.revoke(credential_id, actor=OPERATOR))
    click.echo(f"revoked {credential_id}")


@click.group()
def residents() -> None:
    """Residents and the master patient index: cross-reference, conflicts, link, merge."""


@residents.command("xref")
@data_option
@click.option("--hospital", "hospital_code")
@click.option("--patient-id")
@click.option("--national-id")
def residents_xref(data: Path | None, hospital_code: str | None, patient_id: str | None,
                   national_id: str | None) -> None:
    """The resident of a local ID (or national ID) and all its linked local IDs."""
    view = _run(lambda: _services(data).residents.xref(
        hospital_code=hospital_code, patient_id=patient_id, national_id=national_id))
    click.echo(f"resident {view.id}  {view.national_id_masked}  {view.birth_date} {view.sex}")
    for link in view.links:
        click.echo(f"  {link.hospital_code:<14} {link.patient_id:<20} {link.state:<9} "
                   f"{link.studies} studies {link.reason}")


@residents.command("conflicts")
@data_option
def residents_conflicts(data: Path | None) -> None:
    """Links flagged for review."""
    for c in _run(lambda: _services(data).residents.conflicts()):
        click.echo(f"{c['hospital_code']:<14} {c['patient_id']:<20} linked={c['resident_id']} "
                   f"candidate={c['candidate_resident_id']}  {c['reason']}")


@residents.command("link")
@data_option
@click.argument("hospital_code")
@click.argument("patient_id")
@click.argument("resident_id", type=int)
def residents_link(data: Path | None, hospital_code: str, patient_id: str,
                   resident_id: int) -> None:
    """Link HOSPITAL_CODE's PATIENT_ID to RESIDENT_ID (resolves a conflict)."""
    _run(lambda: _services(data).residents.link(hospital_code, patient_id, resident_id,
                                                actor=OPERATOR))
    click.echo("linked")


@residents.command("unlink")
@data_option
@click.argument("hospital_code")
@click.argument("patient_id")
def residents_unlink(data: Path | None, hospital_code: str, patient_id: str) -> None:
    """Undo the link of HOSPITAL_CODE's PATIENT_ID (or dismiss its conflict)."""
    _run(lambda: _services(data).residents.unlink(hospital_code, patient_id, actor=OPERATOR))
    click.echo("unlinked")


@residents.command("merge")
@data_option
@click.argument("source_id", type=int)
@click.argument("target_id", type=int)
def residents_merge(data: Path | None, source_id: int, target_id: int) -> None:
    """Merge resident SOURCE_ID into TARGET_ID (undo with `unmerge SOURCE_ID`)."""
    event = _run(lambda: _services(data).residents.merge(source_id, target_id, actor=OPERATOR))
    click.echo(f"merged (event {event})")


@residents.command("unmerge")
@data_option
@click.argument("source_id", type=int)
def residents_unmerge(data: Path | None, source_id: int) -> None:
    """Reverse the merge of SOURCE_ID."""
    _run(lambda: _services(data).residents.unmerge(source_id, actor=OPERATOR))
    click.echo("unmerged")


@hospitals.command("activation-code")
@data_option
@click.argument("code")
@click.argument("patient_id")
@click.option("--issuer", default=None, help="IssuerOfPatientID of the record, if several.")
def hospitals_activation_code(data: Path | None, code: str, patient_id: str,
                              issuer: str | None) -> None:
    """A one-time activation code for hospital CODE's linked PATIENT_ID: print it on the
    report slip; the patient registers with it. Shown once; a new one retires the last."""
    issued = _run(lambda: _services(data).accounts.issue_activation_code(
        patient_id, by=OPERATOR, hospital_code=code, issuer=issuer))
    click.echo(f"activation code {issued.code} for resident {issued.resident_id}, valid "
               f"until {issued.expires_at:%Y-%m-%d %H:%M} UTC (shown once)")


@residents.command("reset-account")
@data_option
@click.argument("resident_id", type=int)
@click.option("--id-card-number", prompt="ID card number (read from the card)",
              hide_input=True, help="Typed from the ID card shown in person.")
def residents_reset_account(data: Path | None, resident_id: int, id_card_number: str) -> None:
    """Release RESIDENT_ID's account after an in-person ID card check (the old phone is
    told); then hand them `cloudfilm hospitals activation-code` to register again."""
    _run(lambda: _services(data).accounts.reset_resident_account(resident_id, id_card_number,
                                                                 by=OPERATOR))
    click.echo(f"released the account of resident {resident_id}; issue an activation code "
               "with `cloudfilm hospitals activation-code HOSPITAL PATIENT_ID`")
