"""Text messages: the ``SmsSender`` port, the local outbox, and the messages we send.

Two adapters: :class:`OutboxSmsSender` (default) keeps every message in the ``sms_outbox``
table and sends nothing, for the embedded platform, demos and tests; the production
adapter (``infrastructure.sms.http.HttpSmsSender``) posts to a provider. Messages are
provider templates plus parameters; the outbox stores the locally rendered text so that a
person (or a test) can read it the way they would read their phone. Phones are never
logged; the outbox keeps only their keyed hash and masked form.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from cloudfilm.infrastructure.db import account_repository as repo
from cloudfilm.infrastructure.db.session import Database, DatabaseUnavailableError
from cloudfilm.infrastructure.sms.http import SmsDeliveryError
from cloudfilm.services.errors import ResourceUnavailableError
from cloudfilm.services.identity.protection import IdProtector

logger = logging.getLogger(__name__)

PHONE_DOMAIN = "phone"  # hash/encryption domain of phone numbers


def mask_phone(phone: str) -> str:
    """``138****5678``."""
    return phone[:3] + "****" + phone[-4:] if len(phone) >= 11 else "*" * len(phone)


class SmsSender(Protocol):
    """Port: deliver one templated message to one mobile number."""

    local: bool
    """True when nothing leaves the machine (the outbox)."""

    def send(self, phone: str, template: str, params: Mapping[str, str], text: str) -> None:
        """Deliver, or raise (the adapter's own error); ``text`` is the local rendering."""
        ...


class OutboxSmsSender:
    """Keeps messages in ``sms_outbox`` (its own short transaction), sends nothing."""

    local = True

    def __init__(self, db: Database, protector: IdProtector) -> None:
        self._db = db
        self._protector = protector

    def send(self, phone: str, template: str, params: Mapping[str, str], text: str) -> None:
        with self._db.write() as session:
            repo.add_outbox(session, {
                "created_at": datetime.now(UTC),
                "phone_hash": self._protector.lookup_hash(PHONE_DOMAIN, phone),
                "phone_masked": mask_phone(phone), "template": template[:32], "body": text,
            })


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: int
    created_at: datetime
    phone_masked: str
    template: str
    text: str


@dataclass(frozen=True, slots=True)
class Templates:
    """Provider template ids (``sms`` settings) and the signature shown first."""

    sign_name: str = "cloudfilm"
    code: str = "SMS_CODE"
    grant_request: str = "SMS_GRANT_REQUEST"
    grant_notice: str = "SMS_GRANT_NOTICE"
    account_notice: str = "SMS_ACCOUNT_NOTICE"
    # The portal's requests page (a short public link), or empty.
    portal_link: str = ""


class SmsService:
    """The platform's messages, over whichever :class:`SmsSender` is configured."""

    def __init__(self, sender: SmsSender, db: Database, protector: IdProtector,
                 templates: Templates | None = None) -> None:
        self.sender = sender
        self._db = db
        self._protector = protector
        self._t = templates or Templates()

    def send_code(self, phone: str, code: str, *, purpose: str, doctor: str = "",
                  hospital: str = "") -> None:
        """Text a one-time code (sign-in, or a doctor's access request to read out)."""
        if purpose == "family":
            # ``doctor`` carries the asking resident's name here.
            text = (f"【{self._t.sign_name}】{doctor} asks to act for you in the imaging "
                    f"records portal (see your studies, answer doctors' requests). Code "
                    f"{code}: tell it ONLY if you agree. Valid 5 minutes.")
        elif purpose == "grant":
            text = (f"【{self._t.sign_name}】Dr {doctor} ({hospital}) asks to see your imaging "
                    f"records. Code {code}: tell it to the doctor ONLY if you agree. Valid 5 "
                    "minutes.")
        else:
            text = (f"【{self._t.sign_name}】Your sign-in code is {code}, valid 5 minutes. "
                    "Never share it.")
        self._deliver(phone, self._t.code, {"code": code}, text, kind=f"code.{purpose}")

    def send_grant_request(self, phone: str, *, doctor: str, hospital: str) -> None:
        """Tell a resident that a request waits in their portal inbox."""
        link = self._t.portal_link
        text = (f"【{self._t.sign_name}】Dr {doctor} ({hospital}) asks to see your imaging "
                "records. " + (f"Approve or deny: {link}" if link
                               else "Open the portal to approve or deny."))
        self._deliver(phone, self._t.grant_request,
                      {"doctor": doctor, "hospital": hospital, "link": link}, text,
                      kind="grant.request")

    def send_grant_notice(self, phone: str, *, doctor: str, hospital: str, how: str,
                          hours: int) -> None:
        """Tell a resident that access was granted without their phone (in person, or an
        emergency) and that they can revoke it."""
        text = (f"【{self._t.sign_name}】Dr {doctor} ({hospital}) was given access to your "
                f"imaging records for {hours} h ({how}). Not you? Revoke it in the portal.")
        self._deliver(phone, self._t.grant_notice,
                      {"doctor": doctor, "hospital": hospital, "how": how, "hours": str(hours)},
                      text, kind="grant.notice")

    def send_account_notice(self, phone: str, *, what: str) -> None:
        """Tell the previous phone that the resident's account changed (issue 11: every
        change of the contact phone is announced to the previous number)."""
        text = (f"【{self._t.sign_name}】Your imaging records account was {what} at a "
                "hospital after an ID card check; this phone no longer signs in to it. Not "
                "you? Contact the hospital or the platform at once.")
        self._deliver(phone, self._t.account_notice, {"what": what}, text,
                      kind="account.notice")

    def send_upload_alert(self, phone: str, *, hospital: str, what: str) -> None:
        """Tell a hospital's contact that its uploads are late or have stopped (the
        commission's dashboard, issue 17)."""
        text = (f"【{self._t.sign_name}】{hospital}: {what}. Please check the hospital's "
                "image upload (12-hour rule).")
        self._deliver(phone, self._t.account_notice, {"hospital": hospital, "what": what},
                      text, kind="upload.alert")

    def outbox(self, *, phone: str | None = None, limit: int = 100) -> list[OutboxMessage]:
        """Messages of the local outbox, newest first (empty with a real provider)."""
        phone_hash = (self._protector.lookup_hash(PHONE_DOMAIN, phone)
                      if phone is not None else None)
        try:
            with self._db.read() as session:
                return [OutboxMessage(r.id, r.created_at, r.phone_masked, r.template, r.body)
                        for r in repo.outbox(session, phone_hash=phone_hash, limit=limit)]
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc

    def _deliver(self, phone: str, template: str, params: Mapping[str, str], text: str, *,
                 kind: str) -> None:
        try:
            self.sender.send(phone, template, params, text)
        except SmsDeliveryError as exc:
            raise ResourceUnavailableError(f"{exc}; try again in a minute") from exc
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        logger.info("cloudfilm.sms.sent", extra={"kind": kind, "local": self.sender.local})
