"""Read one FHIR R4 ``DiagnosticReport`` (JSON) as hospitals' RIS systems send it.

The resource is checked with ``fhir.resources.R4B.diagnosticreport.DiagnosticReport``:
FHIR R4B (4.3) did not change DiagnosticReport or the datatypes it uses, so an R4 (4.0.1)
DiagnosticReport validates unchanged (the two are wire-compatible for this resource).

What the validator does not see, and why
----------------------------------------
- ``contained``: R4B's model validates contained resources fully and refuses the minimal
  ones senders really send (an ImagingStudy with only an identifier lacks the required
  ``status`` and ``subject``). The report is validated with ``contained`` removed; the
  contained resources are read from the raw JSON, defensively, by this module.
- ``effectiveDateTime``, ``effectivePeriod.start/end``, ``issued``: FHIR demands a zone on
  every time, but many RIS send local times without one (``2024-03-05T10:20:30``). This
  module parses them itself: with a zone -> aware datetime; without -> naive (the sender's
  local time); a date -> midnight, naive; a year or year-month -> its first day, with a
  warning. ``T`` or a space may separate date and time; anything else is refused.
- ``status``: the model accepts any code, so the status is checked here first.

Mapping onto :class:`ReportDocument`
------------------------------------
- ``report_key``: the first ``identifier`` with both ``system`` and ``value`` that is not
  typed as an accession number (v2-0203 ``ACSN``) -> ``fhir:<system>|<value>``; else the
  first non-accession identifier with only a value -> ``fhir:|<value>``; else the resource
  ``id`` -> ``fhir-id:<id>``. An accession number is not a report identity (one accession
  can have several reports), so a report identified only by one is refused.
- ``study_instance_uid``: from ``imagingStudy[i].identifier`` with system ``urn:dicom:uid``
  (value ``urn:oid:<uid>`` or a bare UID); from ``imagingStudy[i].reference`` ``#<id>`` to a
  contained ImagingStudy's ``urn:dicom:uid`` identifier; from ``ImagingStudy/<x>`` when
  ``<x>`` is itself a DICOM UID. The first one wins; others give a warning.
- ``accession_number``: the first identifier typed ``ACSN`` in ``identifier``,
  ``basedOn[].identifier``, ``imagingStudy[].identifier``, then in contained resources
  referenced by ``basedOn`` (ServiceRequest) and ``imagingStudy`` (ImagingStudy).
- ``patient_id`` / ``patient_name``: ``subject.identifier.value`` and ``subject.display``,
  else the contained Patient (``subject.reference`` ``#<id>``, or the only contained
  Patient): its first identifier value; its first name's ``text``, else family then given
  names, joined without a space when Chinese, with one otherwise.
- ``title``: ``code.text``, else the first coding's display, else its code.
- ``modality``: the first coding in ``category`` then ``code`` with the DICOM system
  (``http://dicom.nema.org/resources/ontology/DCM``) whose code is an imaging modality.
- ``findings``: ``valueString`` of contained Observations referenced by ``result`` whose
  code is LOINC 59776-5 / 18782-3, or whose code text/display says "finding" / "所见";
  else the first ``presentedForm`` text/plain attachment (else text/html, tags stripped);
  else the narrative ``text.div``, tags stripped. A presentedForm or narrative usually
  holds the whole report, impression included: it is kept whole rather than guessed apart.
- ``impression``: ``conclusion``; else contained Observations with LOINC 19005-8 or whose
  code says "impression" / "诊断" / "印象", then ``conclusionCode`` texts (text, else
  display). An Observation matching both keyword lists counts as findings (codes first).
- ``author`` (报告医师): the first ``resultsInterpreter`` with a display (or a contained
  Practitioner's name). ``verifier`` (审核医师): the first ``performer`` that is a person -
  a reference to Practitioner/PractitionerRole (by URL, ``type`` or contained resource), or
  a bare display - ignoring Organizations (FHIR's "responsible service").
- ``has_pdf`` / ``pdf_bytes``: the first application/pdf ``presentedForm`` with inline data,
  at most :data:`MAX_PDF_BYTES` decoded. ``language``: ``language``.
- ``original``: the JSON as received, PDF data replaced by a short marker.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from html.parser import HTMLParser
from typing import Any

import pydantic
from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from cloudfilm.infrastructure.dicom.uids import is_valid_uid
from cloudfilm.infrastructure.reports.document import ReportDocument, ReportFormatError, Status

__all__ = ["MAX_PDF_BYTES", "html_to_text", "read_diagnostic_report"]

#: Largest inline PDF accepted (decoded bytes).
MAX_PDF_BYTES = 20 * 1024 * 1024
# Base64 length of MAX_PDF_BYTES: longer data is refused before it is decoded at all.
_MAX_PDF_BASE64 = 4 * -(-MAX_PDF_BYTES // 3)

_ROOT = "DiagnosticReport"
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_LOINC = "http://loinc.org"
_DICOM_UID_SYSTEM = "urn:dicom:uid"

_STATUS: dict[str, Status] = {
    "registered": "preliminary",
    "partial": "preliminary",
    "preliminary": "preliminary",
    "final": "final",
    "amended": "amended",
    "corrected": "amended",
    "appended": "amended",
    "cancelled": "cancelled",
    "entered-in-error": "cancelled",
}

# Acquisition modalities of PS3.3 C.7.3.1.1.1; non-image codes (SR, KO, PR, DOC...) are not
# a report's modality.
_MODALITIES = frozenset(
    {
        "AR", "BDUS", "BMD", "CR", "CT", "DG", "DX", "ES", "GM", "HC", "IO", "IVOCT", "IVUS",
        "LS", "MG", "MR", "NM", "OAM", "OCT", "OP", "OPT", "OPTBSV", "OPTENF", "OPV", "PT",
        "PX", "RF", "RG", "SM", "TG", "US", "XA", "XC",
    }
)  # fmt: skip

_FINDINGS_LOINC = frozenset({"59776-5", "18782-3"})
_IMPRESSION_LOINC = frozenset({"19005-8"})
_FINDINGS_WORDS = ("finding", "所见")
_IMPRESSION_WORDS = ("impression", "诊断", "印象")

_PERSON_TYPES = frozenset({"Practitioner", "PractitionerRole"})
_TYPED_REF_RE = re.compile(r"(?:^|/)([A-Za-z]+)/([^/]+)(?:/_history/[^/]+)?$")
_CJK_RE = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_PATH_NAME_RE = re.compile(r"_?[A-Za-z][A-Za-z0-9_]*")
_FHIR_TIME_RE = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:[T ](?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?"
    r"(?P<zone>Z|[+-]\d{2}:?\d{2})?)?)?)?"
)


@dataclass
class _Context:
    """The raw resource, its contained resources by id and the warnings gathered so far."""

    resource: dict[str, Any]
    contained: dict[str, tuple[int, dict[str, Any]]]
    warnings: list[str] = field(default_factory=list)

    def local(self, reference: Any, *types: str) -> tuple[int, dict[str, Any]] | None:
        """The contained resource a ``#<id>`` reference points at, if of one of `types`."""
        if not isinstance(reference, str) or not reference.startswith("#"):
            return None
        found = self.contained.get(reference[1:])
        if found is None or (types and found[1].get("resourceType") not in types):
            return None
        return found


def read_diagnostic_report(body: bytes | str | dict[str, Any]) -> ReportDocument:
    """Read one FHIR R4 DiagnosticReport into a :class:`ReportDocument`.

    Parameters
    ----------
    body : bytes or str or dict
        The resource as JSON text (UTF-8 when bytes, as FHIR requires) or already parsed.

    Returns
    -------
    ReportDocument
        ``source="fhir"``; see the module docstring for where each field comes from.

    Raises
    ------
    ReportFormatError
        When the body is not one valid DiagnosticReport, has status ``unknown``, has no
        identity or no study link, carries a bad study UID or time, or an oversized PDF;
        ``field`` is a FHIR path such as ``DiagnosticReport.imagingStudy[0].identifier.value``.
    """
    resource = _load_json(body)
    _check_resource_type(resource)
    status = _status(resource)
    _check_pdf_sizes(resource)
    _validate(resource)
    ctx = _Context(resource, _contained(resource))
    effective_at, issued_at = _times(ctx)
    report_key = _report_key(resource)
    study_uid = _study_uid(ctx)
    accession = _accession(ctx)
    if not study_uid and not accession:
        raise ReportFormatError(
            f"{_ROOT}.imagingStudy",
            "the report names no study: give imagingStudy with a DICOM Study Instance UID "
            "(identifier system urn:dicom:uid, value urn:oid:<uid>) or an accession number "
            "(an identifier typed ACSN, system http://terminology.hl7.org/CodeSystem/v2-0203)",
        )
    patient_id, patient_name = _patient(ctx)
    pdf = _pdf(ctx)
    return ReportDocument(
        source="fhir",
        report_key=report_key,
        status=status,
        source_status=resource["status"],
        study_instance_uid=study_uid,
        accession_number=accession,
        patient_id=patient_id,
        patient_name=patient_name,
        title=_concept_text(resource.get("code")),
        modality=_modality(resource),
        findings=_findings(ctx),
        impression=_impression(ctx),
        author=_author(ctx),
        verifier=_verifier(ctx),
        effective_at=effective_at,
        issued_at=issued_at,
        has_pdf=pdf is not None,
        pdf_bytes=pdf,
        language=_str(resource.get("language")),
        warnings=tuple(ctx.warnings),
        original=_original(resource),
    )


# --- Structure and validation ---------------------------------------------------------


def _load_json(body: bytes | str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(body, dict):
        return body
    if isinstance(body, bytes | bytearray):
        try:
            # FHIR JSON is always UTF-8 (RFC 8259); a UTF-8 BOM is tolerated.
            body = bytes(body).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ReportFormatError(
                _ROOT,
                f"the body is not UTF-8 (byte {exc.start} is invalid); FHIR JSON must be "
                "sent in UTF-8, not GBK/GB18030",
            ) from None
    try:
        parsed = json.loads(body.lstrip("\ufeff"))
    except json.JSONDecodeError as exc:
        raise ReportFormatError(
            _ROOT, f"the body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(parsed, dict):
        raise ReportFormatError(
            _ROOT, f"the JSON is {_json_kind(parsed)}, expected one DiagnosticReport object"
        )
    return parsed


def _json_kind(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _check_resource_type(resource: dict[str, Any]) -> None:
    kind = resource.get("resourceType")
    if kind == _ROOT:
        return
    hint = "; send the DiagnosticReport itself, not a Bundle" if kind == "Bundle" else ""
    got = f"'{kind}'" if isinstance(kind, str) else "missing"
    raise ReportFormatError(
        f"{_ROOT}.resourceType", f"resourceType is {got}, expected 'DiagnosticReport'{hint}"
    )


def _status(resource: dict[str, Any]) -> Status:
    raw = resource.get("status")
    where = f"{_ROOT}.status"
    if raw is None or raw == "":
        raise ReportFormatError(where, "status is missing; send e.g. 'final' or 'preliminary'")
    if raw == "unknown":
        raise ReportFormatError(
            where,
            "status 'unknown' cannot be stored: say whether the report is preliminary, "
            "final, amended/corrected or cancelled",
        )
    if not isinstance(raw, str) or raw not in _STATUS:
        allowed = ", ".join(_STATUS)
        raise ReportFormatError(where, f"status {raw!r} is not a FHIR R4 code ({allowed})")
    return _STATUS[raw]


def _check_pdf_sizes(resource: dict[str, Any]) -> None:
    """Refuse an oversized inline PDF before anything decodes it."""
    for i, form in _items(resource.get("presentedForm")):
        data = form.get("data")
        if _mime(form)[0] != "application/pdf" or not isinstance(data, str):
            continue
        # Line breaks of MIME-wrapped base64 do not count towards the size.
        if len(data) > _MAX_PDF_BASE64 + data.count("\n") + data.count("\r"):
            raise ReportFormatError(f"{_ROOT}.presentedForm[{i}].data", _pdf_too_big())


def _pdf_too_big() -> str:
    return f"the PDF is larger than {MAX_PDF_BYTES // (1024 * 1024)} MB; send a smaller one"


def _validate(resource: dict[str, Any]) -> None:
    """Validate with R4B's model, minus what this module checks itself (module docstring)."""
    both = "effectiveDateTime" in resource and "effectivePeriod" in resource
    if both:
        raise ReportFormatError(
            f"{_ROOT}.effective[x]", "give effectiveDateTime or effectivePeriod, not both"
        )
    checked = {
        key: value
        for key, value in resource.items()
        if key not in ("contained", "effectiveDateTime", "issued")
    }
    period = resource.get("effectivePeriod")
    if isinstance(period, dict):
        checked["effectivePeriod"] = {k: v for k, v in period.items() if k not in ("start", "end")}
    try:
        DiagnosticReport.model_validate(checked)
    except pydantic.ValidationError as exc:
        raise _validation_error(exc) from None


def _validation_error(exc: pydantic.ValidationError) -> ReportFormatError:
    errors = exc.errors()
    first = errors[0]
    kind = str(first["type"])
    if "missing" in kind:
        what = "required element is missing"
    elif kind == "extra_forbidden":
        what = "not an element of FHIR R4 DiagnosticReport (check spelling and case)"
    else:
        what = "invalid value"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return ReportFormatError(_fhir_path(first["loc"]), f"{what}: {first['msg']}{more}")


def _fhir_path(loc: tuple[int | str, ...]) -> str:
    """``('imagingStudy', 0, 'identifier')`` -> ``DiagnosticReport.imagingStudy[0].identifier``."""
    path = _ROOT
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _PATH_NAME_RE.fullmatch(part):
            path += f".{part}"
        # Other parts are pydantic's names for union branches, not FHIR elements.
    return path


def _contained(resource: dict[str, Any]) -> dict[str, tuple[int, dict[str, Any]]]:
    raw = resource.get("contained")
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise ReportFormatError(f"{_ROOT}.contained", "contained must be an array of resources")
    found: dict[str, tuple[int, dict[str, Any]]] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("resourceType"), str):
            raise ReportFormatError(
                f"{_ROOT}.contained[{i}]",
                "a contained resource must be an object with resourceType",
            )
        if isinstance(item.get("id"), str):
            found[item["id"]] = (i, item)
    return found


# --- Small readers of raw JSON ---------------------------------------------------------


def _str(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _items(value: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, object) for each object of a JSON array; anything else yields nothing."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, dict):
                yield i, item


def _codings(concept: Any) -> Iterator[dict[str, Any]]:
    for _, coding in _items(_dict(concept).get("coding")):
        yield coding


def _concept_text(concept: Any) -> str:
    """CodeableConcept text, else the first coding's display, else its code."""
    concept = _dict(concept)
    if text := _str(concept.get("text")):
        return text
    for coding in _codings(concept):
        if label := _str(coding.get("display")) or _str(coding.get("code")):
            return label
    return ""


def _concept_words(concept: Any) -> str:
    """All human text of a CodeableConcept, lower-cased, for keyword matching."""
    concept = _dict(concept)
    texts = [_str(concept.get("text"))] + [_str(c.get("display")) for c in _codings(concept)]
    return " ".join(texts).lower()


def _has_code(concept: Any, system: str, codes: frozenset[str]) -> bool:
    return any(c.get("system") == system and c.get("code") in codes for c in _codings(concept))


def _mime(attachment: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """``text/plain; charset=GB18030`` -> (``text/plain``, ``{"charset": "GB18030"}``)."""
    kind, *params = _str(attachment.get("contentType")).split(";")
    parsed = {}
    for param in params:
        name, _, value = param.partition("=")
        parsed[name.strip().lower()] = value.strip().strip('"')
    return kind.strip().lower(), parsed


def _decode_base64(data: Any) -> bytes | None:
    if not isinstance(data, str):
        return None
    try:
        return base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _join_name(family: str, given: list[str]) -> str:
    """Family name first; no spaces between Chinese parts (王 + 小东 -> 王小东)."""
    parts = [p for p in [family, *given] if p]
    separator = "" if any(_CJK_RE.search(p) for p in parts) else " "
    return separator.join(parts)


def _human_name(names: Any) -> str:
    for _, name in _items(names):
        if text := _str(name.get("text")):
            return text
        given = name.get("given")
        given_parts = [_str(g) for g in given] if isinstance(given, list) else []
        if joined := _join_name(_str(name.get("family")), given_parts):
            return joined
    return ""


# --- Identity, study and patient -------------------------------------------------------


def _is_accession(identifier: dict[str, Any]) -> bool:
    return any(
        c.get("code") == "ACSN" and c.get("system") in (_V2_0203, None)
        for c in _codings(identifier.get("type"))
    )


def _report_key(resource: dict[str, Any]) -> str:
    own = [
        ident
        for _, ident in _items(resource.get("identifier"))
        if not _is_accession(ident) and _str(ident.get("value"))
    ]
    for ident in own:
        if system := _str(ident.get("system")):
            return f"fhir:{system}|{_str(ident['value'])}"
    if own:
        return f"fhir:|{_str(own[0]['value'])}"
    if rid := _str(resource.get("id")):
        return f"fhir-id:{rid}"
    raise ReportFormatError(
        f"{_ROOT}.identifier",
        "the report has no identifier (an accession number does not count) and no id: "
        "later amendments of this report are matched by its identifier, so send one "
        "(system = your RIS, value = its report number)",
    )


def _uid_value(value: Any, where: str) -> str:
    text = value if isinstance(value, str) else ""
    uid = text.removeprefix("urn:oid:")
    if not is_valid_uid(uid):
        raise ReportFormatError(
            where,
            f"{value!r} is not a DICOM UID (only digits and dots, no component with a "
            "leading zero, at most 64 characters; optionally prefixed urn:oid:)",
        )
    return uid


def _study_uids(ctx: _Context) -> Iterator[str]:
    for i, ref in _items(ctx.resource.get("imagingStudy")):
        ident = _dict(ref.get("identifier"))
        if ident.get("system") == _DICOM_UID_SYSTEM:
            yield _uid_value(ident.get("value"), f"{_ROOT}.imagingStudy[{i}].identifier.value")
        reference = _str(ref.get("reference"))
        if reference.startswith("#"):
            yield from _contained_study_uids(ctx, reference, i)
        elif (typed := _TYPED_REF_RE.search(reference)) and typed.group(1) == "ImagingStudy":
            if is_valid_uid(typed.group(2)):
                yield typed.group(2)
            else:
                ctx.warnings.append(
                    f"imagingStudy[{i}] refers to a server id, not a Study Instance UID; "
                    "it was not used to link the study"
                )


def _contained_study_uids(ctx: _Context, reference: str, i: int) -> Iterator[str]:
    found = ctx.local(reference, "ImagingStudy")
    if found is None:
        ctx.warnings.append(f"imagingStudy[{i}] points at no contained ImagingStudy")
        return
    k, study = found
    for j, ident in _items(study.get("identifier")):
        if ident.get("system") == _DICOM_UID_SYSTEM:
            yield _uid_value(ident.get("value"), f"{_ROOT}.contained[{k}].identifier[{j}].value")


def _study_uid(ctx: _Context) -> str:
    uids = list(dict.fromkeys(_study_uids(ctx)))
    if len(uids) > 1:
        ctx.warnings.append(f"{len(uids)} different studies are named; the first was used")
    return uids[0] if uids else ""


def _accession_candidates(ctx: _Context) -> Iterator[dict[str, Any]]:
    resource = ctx.resource
    yield from (ident for _, ident in _items(resource.get("identifier")))
    for key in ("basedOn", "imagingStudy"):
        yield from (_dict(ref.get("identifier")) for _, ref in _items(resource.get(key)))
    for key, kind in (("basedOn", "ServiceRequest"), ("imagingStudy", "ImagingStudy")):
        for _, ref in _items(resource.get(key)):
            if found := ctx.local(ref.get("reference"), kind):
                yield from (ident for _, ident in _items(found[1].get("identifier")))


def _accession(ctx: _Context) -> str:
    for ident in _accession_candidates(ctx):
        if _is_accession(ident) and (value := _str(ident.get("value"))):
            return value
    return ""


def _patient(ctx: _Context) -> tuple[str, str]:
    subject = _dict(ctx.resource.get("subject"))
    patient_id = _str(_dict(subject.get("identifier")).get("value"))
    name = _str(subject.get("display"))
    found = ctx.local(subject.get("reference"), "Patient")
    patients = [r for _, r in ctx.contained.values() if r.get("resourceType") == "Patient"]
    if found is None and len(patients) == 1:
        # An unreferenced but unambiguous contained Patient is the subject in practice.
        found = (0, patients[0])
    if found is not None:
        first_id = next((i for _, i in _items(found[1].get("identifier"))), {})
        patient_id = patient_id or _str(first_id.get("value"))
        name = name or _human_name(found[1].get("name"))
    return patient_id, name


# --- Title, modality, people -----------------------------------------------------------


def _modality(resource: dict[str, Any]) -> str:
    concepts = [c for _, c in _items(resource.get("category"))] + [resource.get("code")]
    for concept in concepts:
        for coding in _codings(concept):
            if coding.get("system") == _DCM and coding.get("code") in _MODALITIES:
                return str(coding["code"])
    return ""


def _person_display(ctx: _Context, ref: dict[str, Any]) -> str:
    if display := _str(ref.get("display")):
        return display
    found = ctx.local(ref.get("reference"), *_PERSON_TYPES)
    return _human_name(found[1].get("name")) if found else ""


def _is_person(ctx: _Context, ref: dict[str, Any]) -> bool:
    reference = _str(ref.get("reference"))
    if ctx.local(reference, *_PERSON_TYPES) is not None:
        return True
    typed = _TYPED_REF_RE.search(reference)
    if (typed and typed.group(1) in _PERSON_TYPES) or ref.get("type") in _PERSON_TYPES:
        return True
    # A display-only performer is how many RIS name the verifying radiologist.
    return not reference and "type" not in ref and "identifier" not in ref


def _author(ctx: _Context) -> str:
    for _, ref in _items(ctx.resource.get("resultsInterpreter")):
        if display := _person_display(ctx, ref):
            return display
    return ""


def _verifier(ctx: _Context) -> str:
    for _, ref in _items(ctx.resource.get("performer")):
        if _is_person(ctx, ref) and (display := _person_display(ctx, ref)):
            return display
    return ""


# --- Findings and impression -----------------------------------------------------------


def _observation_kind(observation: dict[str, Any]) -> str:
    code = observation.get("code")
    if _has_code(code, _LOINC, _FINDINGS_LOINC):
        return "findings"
    if _has_code(code, _LOINC, _IMPRESSION_LOINC):
        return "impression"
    words = _concept_words(code)
    if any(w in words for w in _FINDINGS_WORDS):
        return "findings"
    if any(w in words for w in _IMPRESSION_WORDS):
        return "impression"
    return ""


def _observation_texts(ctx: _Context, kind: str) -> list[str]:
    texts = []
    for i, ref in _items(ctx.resource.get("result")):
        found = ctx.local(ref.get("reference"), "Observation")
        if found is None:
            if kind == "findings":  # warn once, not once per kind
                ctx.warnings.append(f"result[{i}] is not a contained Observation; not read")
            continue
        observation = found[1]
        text = _str(observation.get("valueString"))
        if text and _observation_kind(observation) == kind:
            texts.append(text)
    return texts


def _findings(ctx: _Context) -> str:
    if texts := _observation_texts(ctx, "findings"):
        return "\n".join(texts)
    if text := _presented_text(ctx):
        return text
    return html_to_text(_str(_dict(ctx.resource.get("text")).get("div")))


def _impression(ctx: _Context) -> str:
    if conclusion := _str(ctx.resource.get("conclusion")):
        return conclusion
    texts = _observation_texts(ctx, "impression")
    texts += [
        label
        for _, concept in _items(ctx.resource.get("conclusionCode"))
        if (label := _concept_text(concept))
    ]
    return "\n".join(texts)


def _presented_text(ctx: _Context) -> str:
    """The first readable text/plain attachment, else the first text/html one as text."""
    forms = list(_items(ctx.resource.get("presentedForm")))
    for wanted in ("text/plain", "text/html"):
        for i, form in forms:
            kind, params = _mime(form)
            if kind != wanted:
                continue
            text = _attachment_text(ctx, i, form, params.get("charset", ""))
            if text:
                return html_to_text(text) if kind == "text/html" else text.strip()
    return ""


def _attachment_text(ctx: _Context, i: int, form: dict[str, Any], charset: str) -> str:
    if "data" not in form:
        ctx.warnings.append(f"presentedForm[{i}] has no inline data (only a url); not read")
        return ""
    raw = _decode_base64(form["data"])
    if raw is None:
        ctx.warnings.append(f"presentedForm[{i}].data is not base64; not read")
        return ""
    for codec in dict.fromkeys([charset or "utf-8", "utf-8", "gb18030"]):
        try:
            return raw.decode(codec).lstrip("\ufeff")
        except (LookupError, UnicodeDecodeError):
            continue
    ctx.warnings.append(f"presentedForm[{i}] is neither {charset or 'UTF-8'} nor GB18030")
    return ""


class _TextExtractor(HTMLParser):
    """Collect the text of an HTML fragment, one line per block element."""

    _BLOCKS = frozenset(
        {
            "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt",
            "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "ol", "p",
            "pre", "section", "table", "tbody", "td", "th", "thead", "tr", "ul",
        }
    )  # fmt: skip
    _HIDDEN = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag(tag, +1)

    def handle_endtag(self, tag: str) -> None:
        self._tag(tag, -1)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def _tag(self, tag: str, step: int) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden + step)
        if tag == "pre":
            self._pre = max(0, self._pre + step)
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        # Source line breaks are layout in HTML, except inside <pre>.
        self.parts.append(data if self._pre else re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """Plain text of an HTML fragment: tags dropped, blocks on their own lines.

    Parameters
    ----------
    html : str
        An XHTML narrative (``text.div``) or an HTML report.

    Returns
    -------
    str
        The text; paragraphs separated by one blank line at most, lines stripped.
    """
    if not html:
        return ""
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    lines = [line.strip() for line in "".join(extractor.parts).splitlines()]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# --- Times, PDF, original --------------------------------------------------------------


def _times(ctx: _Context) -> tuple[datetime | None, datetime | None]:
    resource = ctx.resource
    period = _dict(resource.get("effectivePeriod"))
    if "effectiveDateTime" in resource:
        effective = _time(ctx, resource["effectiveDateTime"], f"{_ROOT}.effectiveDateTime")
    else:
        effective = _time(ctx, period.get("start"), f"{_ROOT}.effectivePeriod.start")
    _time(ctx, period.get("end"), f"{_ROOT}.effectivePeriod.end")  # checked, not kept
    issued = _time(ctx, resource.get("issued"), f"{_ROOT}.issued")
    return effective, issued


def _time(ctx: _Context, value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    match = _FHIR_TIME_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ReportFormatError(where, _time_hint(value))
    parts = match.groupdict()
    if parts["day"] is None:
        ctx.warnings.append(f"{where.removeprefix(_ROOT + '.')} has no day; the 1st was used")
    try:
        return datetime(
            int(parts["year"]),
            int(parts["month"] or 1),
            int(parts["day"] or 1),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            int((parts["fraction"] or "0")[:6].ljust(6, "0")),
            tzinfo=_zone(parts["zone"]),
        )
    except ValueError:
        raise ReportFormatError(where, _time_hint(value)) from None


def _time_hint(value: Any) -> str:
    return f"{value!r} is not a date/time; expected e.g. 2024-03-05T10:20:30+08:00 or 2024-03-05"


def _zone(text: str | None) -> timezone | None:
    if text is None:
        return None
    if text == "Z":
        return UTC
    digits = text[1:].replace(":", "")
    offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return timezone(-offset if text[0] == "-" else offset)


def _pdf(ctx: _Context) -> bytes | None:
    pdfs = [
        (i, form)
        for i, form in _items(ctx.resource.get("presentedForm"))
        if _mime(form)[0] == "application/pdf" and "data" in form
    ]
    if not pdfs:
        return None
    if len(pdfs) > 1:
        ctx.warnings.append(f"{len(pdfs)} PDFs were sent; only the first was kept")
    i, form = pdfs[0]
    data = _decode_base64(form["data"])
    where = f"{_ROOT}.presentedForm[{i}].data"
    if data is None:
        raise ReportFormatError(where, "the PDF data is not base64")
    if len(data) > MAX_PDF_BYTES:
        raise ReportFormatError(where, _pdf_too_big())
    if not data.startswith(b"%PDF-"):
        ctx.warnings.append(f"presentedForm[{i}] is labelled application/pdf but is no PDF")
    return data


def _original(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource as received, PDF data replaced by a marker (it is kept as pdf_bytes)."""
    forms = resource.get("presentedForm")
    has_pdf = any(_mime(f)[0] == "application/pdf" and "data" in f for _, f in _items(forms))
    if not has_pdf or not isinstance(forms, list):
        return copy.deepcopy(resource)
    original = copy.deepcopy({k: v for k, v in resource.items() if k != "presentedForm"})
    original["presentedForm"] = [_without_pdf_data(f) for f in forms]
    return original


def _without_pdf_data(form: Any) -> Any:
    if isinstance(form, dict) and _mime(form)[0] == "application/pdf" and "data" in form:
        size = len(form["data"]) if isinstance(form["data"], str) else 0
        return {**form, "data": f"(omitted: {size} characters of base64 PDF, see pdf_bytes)"}
    return copy.deepcopy(form)
