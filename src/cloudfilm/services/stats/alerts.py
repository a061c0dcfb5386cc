"""Sending the alerts a rollup opened to the hospital's contact: its webhook (POST JSON)
and, when enabled, a text to its contact phone (the SMS port). A failed send leaves the
alert on the dashboard; ``stats_alert.notified`` says what was delivered."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from cloudfilm.infrastructure.db import stats_repository as repo
from cloudfilm.infrastructure.db.session import Database
from cloudfilm.services.access.sms import SmsService
from cloudfilm.services.errors import CloudfilmError
from cloudfilm.services.stats.rollup import NewAlert

logger = logging.getLogger(__name__)


class AlertSender:
    def __init__(self, db: Database, *, post: Callable[[str, dict[str, Any]], bool] | None,
                 sms: SmsService | None) -> None:
        self._db = db
        self._post = post
        self._sms = sms

    def __call__(self, alerts: list[NewAlert]) -> None:
        with self._db.reading() as conn:
            hospitals = {int(h.id): h for h in repo.hospitals(conn)}
        for alert in alerts:
            h = hospitals.get(alert.hospital_id)
            if h is None:
                continue
            what = (f"{alert.value:.0%} of studies examined on {alert.day} uploaded late"
                    if alert.rule == "late" else
                    f"no upload for {alert.value:.0f} days (since {alert.day})")
            done = []
            if self._post is not None and h.alert_webhook:
                body = {"hospital_code": h.code, "kind": alert.rule, "day": alert.day,
                        "value": alert.value, "message": what}
                if self._post(h.alert_webhook, body):
                    done.append("webhook")
            if self._sms is not None and h.contact_phone:
                try:
                    self._sms.send_upload_alert(h.contact_phone, hospital=h.name, what=what)
                    done.append("sms")
                except CloudfilmError:
                    logger.warning("cloudfilm.stats.alert_sms_failed",
                                   extra={"alert": alert.alert_id})
            if done:
                with self._db.writing() as conn:
                    repo.mark_notified(conn, alert.alert_id, "+".join(done))
