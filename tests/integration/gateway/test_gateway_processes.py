"""The hospital gateway as a real process between a PACS and a real ``cloudfilm serve``.

Each test ends with the same check: every object the gateway acknowledged is in the cloud
exactly once (no second row, no extra version), its data set bit-identical, and the cloud
gained as many instances as the gateway acknowledged.
"""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid
from tests.factories import make_ct, to_bytes
from tests.integration.crash.kill9 import Server
from tests.integration.dimse.support import dataset_sha256
from tests.integration.gateway import rig
from tests.integration.reports.support import oru_r01

pytestmark = [pytest.mark.commits, pytest.mark.xdist_group("gateway")]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("cloud"))
    server.prepare()
    server.start(timeout=60)
    yield server
    server.stop()


def _check(cloud: Server, acked: list[rig.Sent], before: int) -> rig.Tally:
    result = rig.tally(cloud, acked)
    print(f"\n{result}")
    assert result.lost == [] and result.differing == []
    assert result.arrived == result.identical == result.acknowledged == len(acked)
    assert result.duplicated == 0 and result.versions == 0
    assert rig.count_instances(cloud) - before == len(acked)
    return result


def rig_hospital() -> str:
    from tests.integration.crash.kill9 import HOSPITAL

    return HOSPITAL


def _report_count(cloud: Server) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{cloud.data / 'index.sqlite3'}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT COUNT(*) FROM report")).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.interop
def test_storescu_mllp_and_folder_through_the_gateway(cloud: Server, tmp_path: Path) -> None:
    storescu = rig.shutil_which("storescu")
    if storescu is None:
        pytest.skip("dcmtk storescu is not installed")
    before, reports_before = rig.count_instances(cloud), _report_count(cloud)
    gw = rig.Gateway(tmp_path, f"http://127.0.0.1:{cloud.http_port}", cloud.token,
                     full_cli=True)
    gw.start()
    try:
        assert rig.echo(gw.dicom_port, rig.PACS_AE)
        assert not rig.echo(gw.dicom_port, "STRANGER")  # not a configured calling AE
        datasets = rig.studies("GW-DCMTK", 3, 4)
        files = []
        for k, ds in enumerate(datasets):
            path = tmp_path / f"in{k}.dcm"
            path.write_bytes(to_bytes(ds))
            files.append(str(path))
        with (tmp_path / "storescu.log").open("wb") as log:
            done = subprocess.run(
                [storescu, "-aet", rig.PACS_AE, "-aec", rig.GATEWAY_AE, "127.0.0.1",
                 str(gw.dicom_port), *files],
                stdout=log, stderr=subprocess.STDOUT, timeout=60, check=False)
        assert done.returncode == 0, (tmp_path / "storescu.log").read_text()
        acked = [rig.Sent(str(ds.SOPInstanceUID), dataset_sha256(to_bytes(ds)))
                 for ds in datasets]
        # A report over MLLP for the first study, and one more image dropped in the folder.
        import hl7.client

        message = oru_r01(order="GW-1", accession="GW-ACC-1",
                          study_uid=str(datasets[0].StudyInstanceUID), control_id="GWMSG1")
        with hl7.client.MLLPClient("127.0.0.1", gw.mllp_port) as client:
            answer = client.send_message(message.encode("utf-8"))
        assert b"MSA|AA|GWMSG1" in answer
        dropped = make_ct(patient_id="GW-DCMTK", study_uid=str(datasets[0].StudyInstanceUID))
        gw.watch_dir.mkdir(exist_ok=True)
        (gw.watch_dir / "dropped.dcm").write_bytes(to_bytes(dropped))
        acked.append(rig.Sent(str(dropped.SOPInstanceUID), dataset_sha256(to_bytes(dropped))))
        deadline = time.monotonic() + 30
        while (gw.watch_dir / "dropped.dcm").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        status = gw.wait_drained()
        assert status["counts"]["sent"] == len(acked) + 1  # and the report
        assert status["parked"] == [] and status["counts"]["refused"] == 0
        metrics = httpx.get(f"http://127.0.0.1:{gw.status_port}/metrics", timeout=5).text
        assert "cloudfilm_gateway_sent_objects_total 14.0" in metrics
        page = httpx.get(f"http://127.0.0.1:{gw.status_port}/", timeout=5).text
        assert "sent 14" in page
        # The heartbeat reached the cloud under the credential's hospital.
        time.sleep(1.5)
        beats = httpx.get(f"http://127.0.0.1:{cloud.http_port}/api/v1/gateway/heartbeats",
                          timeout=5).json()
        assert [(b["hospital_code"], b["ae_title"], b["queued"]) for b in beats] == \
            [(rig_hospital(), rig.GATEWAY_AE, 0)]
    finally:
        gw.stop()
    _check(cloud, acked, before)
    assert _report_count(cloud) == reports_before + 1
    assert list(gw.queue_dir.glob("objects/*/*")) == []  # acknowledged: local copies gone


def test_cloud_answering_500s_losing_answers_and_timing_out(cloud: Server,
                                                           tmp_path: Path) -> None:
    before = rig.count_instances(cloud)
    proxy = rig.FaultProxy(f"http://127.0.0.1:{cloud.http_port}", seed=7, hold_seconds=2.0,
                           p_timeout=0.07)
    gw = rig.Gateway(tmp_path, proxy.url, cloud.token, cloud={"timeout": 1.0},
                     forward={"batch_size": 3})
    gw.start()
    sender = rig.Sender(gw.dicom_port)
    try:
        sender.send(rig.studies("GW-CHAOS", 6, 5))
        gw.wait_drained(timeout=120)
    finally:
        gw.stop()
        proxy.close()
    stats = proxy.stats
    print(f"\nfault proxy: {stats}")
    assert stats.refused_500 and stats.lost_answers and stats.timeouts, stats
    _check(cloud, sender.acked, before)


def test_gateway_killed_mid_send_three_times(cloud: Server, tmp_path: Path) -> None:
    before = rig.count_instances(cloud)
    # Each answer is held a little so that kills land between "the cloud stored it" and
    # "the gateway recorded it".
    proxy = rig.FaultProxy(f"http://127.0.0.1:{cloud.http_port}", delay=0.15)
    proxy.mode = "pass"
    gw = rig.Gateway(tmp_path, proxy.url, cloud.token, forward={"batch_size": 2})
    gw.start()
    sender = rig.Sender(gw.dicom_port)
    rng = random.Random(3)
    datasets = rig.studies("GW-KILL", 6, 5)
    import threading

    pushing = threading.Thread(target=sender.send, args=(datasets,), kwargs={"deadline": 120},
                               daemon=True)
    pushing.start()
    kills = 0
    try:
        for _ in range(3):
            time.sleep(rng.uniform(0.6, 1.2))
            gw.kill()
            kills += 1
            gw.start()
        pushing.join(timeout=120)
        assert not pushing.is_alive()
        status = gw.wait_drained(timeout=90)
    finally:
        gw.stop()
        proxy.close()
    assert kills == 3
    assert len(sender.acked) == len(datasets)
    assert status["counts"]["sent"] == len(datasets)
    _check(cloud, sender.acked, before)


def test_link_down_until_the_quota_fills_then_back(cloud: Server, tmp_path: Path) -> None:
    """The cloud unreachable for a while: the hospital goes on sending, the gateway queues
    until its quota, then answers 0xA700 (the PACS keeps those); the link comes back and
    everything drains."""
    before = rig.count_instances(cloud)
    proxy = rig.FaultProxy(f"http://127.0.0.1:{cloud.http_port}")
    proxy.mode = "down"
    gw = rig.Gateway(tmp_path, proxy.url, cloud.token,
                     queue={"quota_bytes": 1024 * 1024, "warn_fraction": 0.5})
    gw.start()
    sender = rig.Sender(gw.dicom_port)
    try:
        # ~33 KB each: the 1 MiB quota holds about 30 of them.
        datasets = [make_ct(patient_id="GW-QUOTA", study_uid=generate_uid(), size=128,
                            instance_number=k + 1) for k in range(40)]
        refused = sender.send(datasets, stop_on_full=True)
        assert 20 <= len(sender.acked) <= 35 and refused, (len(sender.acked), len(refused))
        assert 0xA700 in sender.statuses
        time.sleep(0.5)
        status = gw.status()
        assert status["quota_warning"]
        assert status["bytes_queued"] <= status["quota_bytes"]
        assert status["counts"]["sent"] == 0
        assert status["counts"]["received"] + status["counts"]["sending"] == len(sender.acked)
        assert "cannot reach the cloud" in status["last_error"]
        assert status["oldest_unsent_seconds"] > 0
        proxy.mode = "pass"  # the link comes back: the queue drains and takes the rest
        gw.wait_drained()
        sender.send(refused)
        status = gw.wait_drained()
        assert status["counts"]["sent"] == len(datasets)
        assert not status["quota_warning"]
    finally:
        gw.stop()
        proxy.close()
    assert len(sender.acked) == len(datasets)
    _check(cloud, sender.acked, before)


@pytest.mark.interop
def test_pull_mode_from_orthanc(cloud: Server, tmp_path: Path) -> None:
    """A PACS that cannot push: the gateway C-FINDs Orthanc for today's studies and C-MOVEs
    them to itself; they reach the cloud like pushed ones."""
    import json
    import os
    import signal

    orthanc_exe = rig.shutil_which("Orthanc")
    if orthanc_exe is None:
        pytest.skip("Orthanc is not installed")
    before = rig.count_instances(cloud)
    orthanc_http, orthanc_dicom = rig.free_port(), rig.free_port()
    gw = rig.Gateway(tmp_path, f"http://127.0.0.1:{cloud.http_port}", cloud.token,
                     pull={"ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc_dicom,
                           "hours": 24, "interval_seconds": 1.0, "timeout": 10.0})
    config = {
        "Name": "pacs", "StorageDirectory": str(tmp_path / "orthanc"),
        "IndexDirectory": str(tmp_path / "orthanc"), "HttpPort": orthanc_http,
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomServerEnabled": True, "DicomPort": orthanc_dicom, "DicomAet": "ORTHANC",
        "DicomCheckCalledAet": False,
        "DicomModalities": {"gateway": [rig.GATEWAY_AE, "127.0.0.1", gw.dicom_port]},
    }
    (tmp_path / "orthanc.json").write_text(json.dumps(config))
    with (tmp_path / "orthanc.log").open("wb") as log:
        orthanc = subprocess.Popen([orthanc_exe, str(tmp_path / "orthanc.json")],
                                   stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    base = f"http://127.0.0.1:{orthanc_http}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/system", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and orthanc.poll() is None, "no Orthanc"
            time.sleep(0.2)
        today = time.strftime("%Y%m%d")
        datasets = [ds for ds in rig.studies("GW-PULL", 2, 3)]
        for ds in datasets:
            ds.StudyDate = today
            assert httpx.post(f"{base}/instances", content=to_bytes(ds),
                              timeout=10).status_code == 200
        acked = [rig.Sent(str(ds.SOPInstanceUID), dataset_sha256(to_bytes(ds)))
                 for ds in datasets]
        gw.start()
        try:
            deadline = time.monotonic() + 60
            while gw.status()["counts"]["sent"] < len(datasets):
                assert time.monotonic() < deadline, gw.log_tail()
                time.sleep(0.2)
            time.sleep(2.5)  # two more polls: nothing is moved or sent twice
            status = gw.wait_drained()
            assert status["counts"]["sent"] == len(datasets)
        finally:
            gw.stop()
    finally:
        os.killpg(orthanc.pid, signal.SIGTERM)
        orthanc.wait(timeout=20)
    _check(cloud, acked, before)
