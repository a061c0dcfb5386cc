"""The forwarder's reading of the cloud's answers: sent, refused (parked) or retried."""

from __future__ import annotations

import random
import time

import orjson

from cloudfilm.gateway.forward import backoff, classify_stow
from cloudfilm.gateway.queue import Item


def _items(n: int) -> list[Item]:
    return [Item(k, "dicom", f"1.2.{k}", f"{k:064x}", "S", 10, 0, False) for k in range(n)]


def _answer(referenced: list[str], failed: list[tuple[str, int, str]]) -> bytes:
    body: dict[str, object] = {}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": [
            {"00081155": {"vr": "UI", "Value": [uid]}} for uid in referenced]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [
            {"00081155": {"vr": "UI", "Value": [uid]}, "00081197": {"vr": "US", "Value": [code]},
             "0040A160": {"vr": "UT", "Value": [text]}} for uid, code, text in failed]}
    return orjson.dumps(body)


def test_all_stored() -> None:
    items = _items(3)
    outcome = classify_stow(200, _answer([i.uid for i in items], []), items)
    assert outcome.sent == items and not outcome.refused and not outcome.retry


def test_partly_refused_objects_are_parked_with_the_reason() -> None:
    items = _items(3)
    body = _answer(["1.2.0"], [("1.2.1", 0xC000, "no pixel data"), ("1.2.2", 0xA700, "disk")])
    outcome = classify_stow(202, body, items)
    assert outcome.sent == [items[0]]
    assert outcome.refused == [(items[1], "0xC000 no pixel data")]
    assert outcome.retry == [items[2]]  # out of resources at the cloud: try again later


def test_none_stored_409() -> None:
    items = _items(1)
    outcome = classify_stow(409, _answer([], [("1.2.0", 0x0122, "SOP class")]), items)
    assert outcome.refused == [(items[0], "0x0122 SOP class")]


def test_server_trouble_and_credentials_are_retried_not_parked() -> None:
    items = _items(2)
    for status in (500, 502, 503, 504, 401, 403, 429, 408):
        outcome = classify_stow(status, b"oops", items)
        assert outcome.retry == items and not outcome.refused and not outcome.sent, status


def test_a_4xx_for_the_whole_request() -> None:
    one = _items(1)
    assert classify_stow(400, b"bad", one).refused[0][0] == one[0]
    two = _items(2)
    outcome = classify_stow(413, b"too large", two)
    assert outcome.retry == two and outcome.solo  # each alone next time, to find the culprit


def test_objects_missing_from_the_answer_are_retried() -> None:
    items = _items(2)
    outcome = classify_stow(200, _answer(["1.2.0"], []), items)
    assert outcome.sent == [items[0]] and outcome.retry == [items[1]]
    garbage = classify_stow(200, b"<html>proxy</html>", items)
    assert garbage.retry == items


def test_backoff_grows_with_jitter_and_a_cap() -> None:
    rng = random.Random(1)
    delays = [backoff(a, 1.0, 60.0, rng) for a in range(12)]
    assert 0.5 <= delays[0] <= 1.0
    assert 4.0 <= delays[3] <= 8.0
    assert all(30.0 <= d <= 60.0 for d in delays[6:])
    assert len({round(d, 6) for d in delays[6:]}) > 1  # jittered, not in lockstep


def test_throttle_spreads_bytes_over_time() -> None:
    from cloudfilm.gateway.forward import Throttle

    bucket = Throttle(1000)
    assert bucket.wait_seconds(1000) == 0.0  # one second of burst
    assert 0.9 <= bucket.wait_seconds(1000) <= 1.0
    assert 1.9 <= bucket.wait_seconds(1000) <= 2.0
    assert Throttle(0).wait_seconds(10**9) == 0.0
    hour = time.localtime().tm_hour
    off_hours = Throttle(1000, (hour + 1) % 24, (hour + 2) % 24 or 24)
    assert not off_hours.active()
    assert off_hours.wait_seconds(10**6) == 0.0
