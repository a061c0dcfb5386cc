"""An external AI engine in its own process, speaking only HTTP: poll the UPS worklist,
claim a workitem, read the study over WADO-RS, run the detector on it, send the findings,
complete; then check that the study is closed to it again. On the way it reports its
progress with Update Workitem (PS3.18 11.6), rightly and wrongly, and as another engine
(OTHER_CREDENTIAL). Prints a JSON summary.

``python ups_client.py BASE_URL CREDENTIAL OTHER_CREDENTIAL``
"""

from __future__ import annotations

import io
import json
import sys

import httpx
import pydicom
from pydicom.uid import generate_uid
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from cloudfilm.infrastructure.ai.nodules import detect

UPS = "application/dicom+json"
GLOBAL = "1.2.840.10008.5.1.4.34.5"
AE = "ENGINE"
PROGRESS = {"00741002": {"vr": "SQ", "Value": [{
    "00741004": {"vr": "DS", "Value": [50]},
    "00741006": {"vr": "ST", "Value": ["reading the study"]}}]}}


def _parts(response: httpx.Response) -> list[bytes]:
    """The bodies of a multipart/related response."""
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    out = []
    for chunk in response.content.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        _, _, body = chunk.partition(b"\r\n\r\n")
        out.append(body.removesuffix(b"\r\n"))
    return out


def main() -> None:
    base, credential, other = sys.argv[1], sys.argv[2], sys.argv[3]
    auth = {"Authorization": f"Bearer {credential}"}
    summary: dict[str, object] = {}
    with httpx.Client(base_url=base, headers=auth, timeout=60) as client:
        found = client.get("/dicomweb/workitems", params={"ProcedureStepState": "SCHEDULED"})
        found.raise_for_status()
        item = found.json()[0]
        uid = item["00080018"]["Value"][0]
        study_url = item["00404021"]["Value"][0]["00081190"]["Value"][0]
        summary["before_claim"] = client.get(study_url + "/metadata").status_code
        tx = str(generate_uid())

        def state(value: str, transaction: str) -> int:
            return client.put(f"/dicomweb/workitems/{uid}/state", headers={
                "content-type": UPS}, content=json.dumps([{
                    "00741000": {"vr": "CS", "Value": [value]},
                    "00081195": {"vr": "UI", "Value": [transaction]}}])).status_code

        as_other = {"Authorization": f"Bearer {other}"}
        summary["subscribe_as_other"] = client.post(
            f"/dicomweb/workitems/{uid}/subscribers/{AE}", headers=as_other).status_code
        # The other engine subscribes globally under the same AE title: it must still hear
        # nothing of a workitem that is not its algorithm's.
        summary["other_global"] = client.post(
            f"/dicomweb/workitems/{GLOBAL}/subscribers/{AE}", headers=as_other).status_code
        summary["subscribe"] = client.post(
            f"/dicomweb/workitems/{uid}/subscribers/{AE}").status_code
        ws_base = base.replace("http://", "ws://") + f"/dicomweb/subscribers/{AE}"
        try:
            connect(ws_base, open_timeout=10).close()
            summary["channel_anonymous"] = "open"
        except InvalidStatus as exc:
            summary["channel_anonymous"] = exc.response.status_code
        mine = connect(ws_base, additional_headers=auth, open_timeout=10)
        theirs = connect(ws_base, additional_headers=as_other, open_timeout=10)

        def event(ws: ClientConnection, timeout: float = 10) -> str:
            try:
                report = json.loads(ws.recv(timeout=timeout))[0]
            except TimeoutError:
                return "none"
            assert report["00001000"]["Value"] == [uid], report
            return str(report["00741000"]["Value"][0])

        summary["claim"] = state("IN PROGRESS", tx)
        summary["event_claim"] = event(mine)
        summary["claim_again"] = state("IN PROGRESS", tx)

        def update(body: dict[str, object], transaction: str | None,
                   as_other: bool = False) -> str:
            params = {"transaction": transaction} if transaction else {}
            headers = {"content-type": UPS}
            if as_other:
                headers["Authorization"] = f"Bearer {other}"
            r = client.post(f"/dicomweb/workitems/{uid}", params=params, headers=headers,
                            content=json.dumps([body]))
            warned = "warning" in r.headers
            return f"{r.status_code}{' warned' if warned else ''}"

        summary["update_no_tx"] = update(PROGRESS, None)
        summary["update_wrong_tx"] = update(PROGRESS, str(generate_uid()))
        summary["update_state"] = update({"00741000": {"vr": "CS", "Value": ["COMPLETED"]}},
                                         tx)
        summary["update_odd_tag"] = update({"\u00fc\"\n": {"vr": "SQ", "Value": []}}, tx)
        summary["update_as_other"] = update(PROGRESS, tx, as_other=True)
        summary["update"] = update(PROGRESS, tx)
        now = client.get(f"/dicomweb/workitems/{uid}").json()[0]
        summary["progress"] = now["00741002"]["Value"][0]["00741004"]["Value"][0]
        study = client.get(study_url, headers={
            "accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
        study.raise_for_status()
        datasets = [pydicom.dcmread(io.BytesIO(p)) for p in _parts(study)]
        findings = detect(datasets)
        summary["read"] = len(datasets)
        sent = client.post(f"/api/v1/ai/workitems/{uid}/findings", json={
            "transaction_uid": tx, "findings": [{
                "label": f.label, "centre_mm": list(f.centre_mm),
                "diameter_mm": f.diameter_mm, "score": f.score,
                "sop_instance_uid": f.sop_instance_uid, "row": f.row, "column": f.column}
                for f in findings]})
        summary["findings"] = sent.status_code
        summary["diameters"] = sorted(round(f.diameter_mm) for f in findings)
        summary["complete_wrong_tx"] = state("COMPLETED", str(generate_uid()))
        summary["complete"] = state("COMPLETED", tx)
        summary["event_complete"] = event(mine)
        summary["event_other"] = event(theirs, timeout=0.5)
        mine.close()
        theirs.close()
        summary["unsubscribe"] = client.delete(
            f"/dicomweb/workitems/{uid}/subscribers/{AE}").status_code
        summary["after_complete"] = client.get(study_url + "/metadata").status_code
        summary["update_completed"] = update(PROGRESS, tx)
        final = client.get(f"/dicomweb/workitems/{uid}").json()[0]
        summary["state"] = final["00741000"]["Value"][0]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
