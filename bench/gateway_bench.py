"""Gateway forwarding throughput on loopback, against C-STORE straight to the cloud.

Three runs over the same kind of objects (fresh UIDs each), one ``cloudfilm serve``:

1. direct: one pynetdicom association C-STOREs every object straight to the cloud;
2. drain: the gateway holds a full queue (filled while the cloud was down); the cloud comes
   back and the clock runs until the cloud has acknowledged everything (STOW-RS batches);
3. through: the hospital C-STOREs into the gateway while it forwards; the clock runs until
   the last object is acknowledged by the cloud.

Every acknowledged object is then checked in the cloud (once, bit-identical data set).

    .venv/bin/python bench/gateway_bench.py                 # 4 studies x 25 slices, 512x512
    .venv/bin/python bench/gateway_bench.py --studies 2 --slices 10 --size 256   # quick
    sudo .venv/bin/python bench/gateway_bench.py --link 100:20   # 100 Mbit/s, 20 ms RTT

``--pack`` measures lossless compression at the gateway (``[compress]``, gateway/pack.py)
instead, on synthetic 512x512 CT slices (bench/synth.py, as bench/keepup.py) sent by dcmtk
``storescu`` (4 associations) while the cloud is down, once with compression off and once
on: the gateway's C-STORE receive rate and CPU per object, the packer's rate and CPU per
object (its processes), how long after the last receive the packer finished (does it keep
up with the gateway's own receive rate on the same 2 cores?), then the cloud comes back and
the bytes sent over the WAN (sum of the STOW-RS parts) against the bytes received:

    flock /work/notes/bench.lock .venv/bin/python bench/gateway_bench.py --pack --objects 500
    ... --pack --syntax htj2k --pack-workers 2

With ``--link RATE:RTT`` the hospital side (the gateway, and the direct C-STORE, sent with
dcmtk ``storescu``) runs in a network namespace whose upload is shaped by ``tc``
(tests/integration/gateway/link.py); the PACS pushing into the gateway is not shaped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the rig lives with the tests

from pydicom.uid import ExplicitVRLittleEndian  # noqa: E402
from pynetdicom import AE  # noqa: E402
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]  # noqa: E402
from tests.factories import to_bytes  # noqa: E402
from tests.integration.crash import kill9  # noqa: E402
from tests.integration.dimse.support import dataset_sha256  # noqa: E402
from tests.integration.gateway import rig  # noqa: E402
from tests.integration.gateway.link import Link  # noqa: E402

from harness import BENCH_DIR, WORK_DIR  # noqa: E402


def direct_c_store(server: kill9.Server, datasets: list[Any]) -> list[rig.Sent]:
    ae = AE(ae_title=kill9.SCU_AE)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="CLOUDFILM")
    assert assoc.is_established, "the cloud refused the association"
    sent = []
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            assert int(status.Status) == 0, f"C-STORE 0x{int(status.Status):04X}"
            sent.append(rig.Sent(str(ds.SOPInstanceUID), dataset_sha256(to_bytes(ds))))
    finally:
        assoc.release()
    return sent


def phantom(size: int, seed: int) -> bytes:
    """A water-like ellipse (HU ~40, noise SD 80: gzip ~2:1 like real CT) in air."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.ogrid[:size, :size]
    inside = ((x - size / 2) / (size * 0.47)) ** 2 + ((y - size / 2) / (size * 0.47)) ** 2 < 1
    image = np.where(inside, 1064 + rng.normal(0, 80, (size, size)), 24)
    return bytes(np.clip(image, 0, 4095).astype(np.uint16).tobytes())


def write_files(datasets: list[Any], folder: Path) -> list[Path]:
    folder.mkdir()
    files = []
    for k, ds in enumerate(datasets):
        files.append(folder / f"{k:05d}.dcm")
        files[-1].write_bytes(to_bytes(ds))
    return files


def direct_storescu(link: Link, port: int, datasets: list[Any],
                   files: list[Path]) -> list[rig.Sent]:
    """C-STORE straight to the cloud from inside the hospital's namespace (dcmtk; its
    start-up, ~50 ms, is counted)."""
    subprocess.run([*link.prefix, "storescu", "-aet", kill9.SCU_AE, "-aec", "CLOUDFILM",
                    "-xs", "-to", "60", link.outer, str(port), *map(str, files)],
                   check=True, timeout=1800, stdout=subprocess.DEVNULL)
    return [rig.Sent(str(ds.SOPInstanceUID), dataset_sha256(to_bytes(ds))) for ds in datasets]


def orthanc_forward(link: Link, cloud_dicom_port: int, datasets: list[Any],
                    log: Any) -> tuple[float, list[rig.Sent]]:
    """Debian's Orthanc inside the hospital's namespace as the store-and-forward box: the
    studies are uploaded into it (not timed), then ``POST /modalities/cloud/store`` (C-STORE,
    one association) is timed until it returns."""
    import httpx

    from orthanc import Orthanc

    relay = link.relay(cloud_dicom_port)

    class LinkOrthanc(Orthanc):
        def prepare(self) -> tuple[list[str], dict[str, str]]:
            argv, env = super().prepare()
            path = Path(argv[1])
            config = json.loads(path.read_text())
            config.update({"RemoteAccessAllowed": True,  # reached on the namespace's address
                           "DicomModalities": {"cloud": ["CLOUDFILM", link.outer, relay]},
                           "DicomScuTimeout": 120})
            path.write_text(json.dumps(config))
            return [*link.prefix, *argv], env

        @property
        def health_url(self) -> str:
            return f"http://{link.inner}:{self.http_port}/system"

    with LinkOrthanc(aet=kill9.SCU_AE) as orthanc:
        base = f"http://{link.inner}:{orthanc.http_port}"
        studies = set()
        with httpx.Client(timeout=60) as client:
            for ds in datasets:
                answer = client.post(f"{base}/instances", content=to_bytes(ds))
                answer.raise_for_status()
                studies.add(answer.json()["ParentStudy"])
            log("orthanc loaded")
            t0 = time.perf_counter()
            answer = client.post(f"{base}/modalities/cloud/store", timeout=1800,
                                 json={"Resources": sorted(studies), "Synchronous": True})
            seconds = time.perf_counter() - t0
            answer.raise_for_status()
    return seconds, [rig.Sent(str(ds.SOPInstanceUID), dataset_sha256(to_bytes(ds)))
                     for ds in datasets]


SYNTAXES = {"jpegls": "1.2.840.10008.1.2.4.80", "htj2k": "1.2.840.10008.1.2.4.201"}


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def synthetic_ct(n: int, tag: str) -> list[Path]:
    """``n`` synthetic CT slices of one series (cached in bench/work/gateway)."""
    from synth import write_ct_study

    folder = WORK_DIR / "gateway" / f"{tag}-{n}"
    paths = sorted(folder.glob("*.dcm"))
    if len(paths) != n:
        shutil.rmtree(folder, ignore_errors=True)
        paths = write_ct_study(folder, n, patient_id=f"GWPACK-{tag}",
                               patient_name=f"Gateway^{tag}", seed=sum(map(ord, tag)))
    return paths


def storescu(port: int, files: list[Path], assocs: int) -> float:
    """C-STORE ``files`` into the gateway over ``assocs`` associations; wall seconds."""
    started = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aet", rig.PACS_AE, "-aec", rig.GATEWAY_AE,
                               "127.0.0.1", str(port), *map(str, files[i::assocs])],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for i in range(assocs)]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[-500:]}")
    return time.perf_counter() - started


def _children_cpu(pid: int) -> float:
    import psutil

    from harness import cpu_seconds

    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return 0.0
    return sum(cpu_seconds(k.pid) for k in kids)


def _pack_rows(queue_dir: Path, since: float = 0.0
               ) -> tuple[int, float | None, float | None, dict[str, int]]:
    """(objects waiting for the packer, first and last packed_at, states), of the objects
    settled after ``since``."""
    import sqlite3

    db = sqlite3.connect(f"file:{queue_dir / 'queue.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        waiting = db.execute("SELECT COUNT(*) FROM pack WHERE state IN ('pending', "
                             "'packing')").fetchone()[0]
        first, last = db.execute("SELECT MIN(packed_at), MAX(packed_at) FROM pack "
                                 "WHERE state='packed' AND packed_at>?", (since,)).fetchone()
        states = dict(db.execute("SELECT state || ':' || detail, COUNT(*) FROM pack "
                                 "WHERE packed_at>? GROUP BY state, detail",
                                 (since,)).fetchall())
    finally:
        db.close()
    return int(waiting), first, last, states


def _sent_bytes(queue_dir: Path) -> int:
    import sqlite3

    db = sqlite3.connect(f"file:{queue_dir / 'queue.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        return int(db.execute("SELECT COALESCE(SUM(bytes), 0) FROM sent_day").fetchone()[0])
    finally:
        db.close()


def pack_run(server: kill9.Server, workdir: Path, files: list[Path], warm: list[Path], *,
             compress: bool,
             syntax: str, workers: int, assocs: int, log: Any) -> dict[str, Any]:
    """One gateway, the cloud down: receive ``files`` (the packer working meanwhile when
    ``compress``), wait for the packer, bring the cloud back and drain."""
    import psutil

    from harness import cpu_seconds

    gw = rig.Gateway(workdir, f"http://127.0.0.1:{server.http_port}", server.token,
                     queue={"quota_bytes": 20 * 1024**3},
                     forward={"batch_size": 50, "concurrency": 2, "batch_bytes": 256 * 1024**2,
                              "retry_initial_seconds": 0.1, "retry_max_seconds": 0.3},
                     dicom={"max_associations": 16},
                     compress={"enabled": compress, "default": syntax, "workers": workers},
                     status={"heartbeat_seconds": 0.0})
    gw.start()
    n = len(files)
    received = sum(p.stat().st_size for p in files)
    out: dict[str, Any] = {"compress": compress, "objects": n, "bytes_received": received}
    try:
        assert gw.proc is not None
        pid = gw.proc.pid
        # Warm-up (not counted): a few slices received, packed and sent, so that every
        # packer process has imported its codecs and the doors are warm.
        storescu(gw.dicom_port, warm, assocs)
        gw.wait_drained(timeout=120)
        if compress:
            deadline = time.monotonic() + 60
            while len(psutil.Process(pid).children()) < workers and time.monotonic() < deadline:
                time.sleep(0.1)
        sent0 = _sent_bytes(gw.queue_dir)
        server.stop()  # the link is down: the queue fills
        load0 = loadavg()
        main0, kids0 = cpu_seconds(pid), _children_cpu(pid)
        since = time.time()
        wall = storescu(gw.dicom_port, files, assocs)
        ended = time.time()
        main1 = cpu_seconds(pid)
        out["receive_objects_per_second"] = n / wall
        out["receive_cpu_ms_per_object"] = (main1 - main0) * 1000 / n
        if compress:
            deadline = time.monotonic() + 900
            while _pack_rows(gw.queue_dir)[0] and time.monotonic() < deadline:
                time.sleep(0.2)
            waiting, first, last, states = _pack_rows(gw.queue_dir, since)
            out["still_waiting_for_the_packer"] = waiting
            packed = sum(v for k, v in states.items() if k.startswith("packed"))
            out["pack_states"] = states
            out["pack_cpu_ms_per_object"] = ((_children_cpu(pid) - kids0)
                                             + (cpu_seconds(pid) - main1)) * 1000 / n
            if first is not None and last is not None and packed > 1:
                out["pack_objects_per_second"] = (packed - 1) / max(last - first, 1e-6)
                out["pack_finished_after_receive_s"] = max(0.0, last - ended)
        out["load"] = f"{load0} -> {loadavg()}"
        log(f"received: {out}")
        server.start(timeout=90)
        t0 = time.perf_counter()
        gw.wait_drained(timeout=900)
        out["drain_seconds"] = time.perf_counter() - t0
        out["bytes_sent"] = _sent_bytes(gw.queue_dir) - sent0
        out["wan_ratio"] = received / max(out["bytes_sent"], 1)
    finally:
        gw.stop()
    return out


def pack_main(args: argparse.Namespace) -> None:
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-pack-", dir=WORK_DIR))
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:7.1f} s] {message}", file=sys.stderr, flush=True)

    sets = {k: synthetic_ct(args.objects, k) for k in ("off", "on")}
    # 2 slices per packer process and association
    warm = {k: synthetic_ct(2 * max(args.pack_workers, args.assocs), f"warm-{k}")
            for k in ("off", "on")}
    (workdir / "cloud").mkdir()
    server = kill9.Server(workdir / "cloud")
    server.prepare()
    server.start(timeout=90)
    runs: dict[str, Any] = {}
    try:
        for key, compress in (("off", False), ("on", True)):
            (workdir / key).mkdir()
            runs[key] = pack_run(server, workdir / key, sets[key], warm[key],
                                 compress=compress,
                                 syntax=SYNTAXES[args.syntax], workers=args.pack_workers,
                                 assocs=args.assocs, log=log)
            log(f"{key}: {runs[key]}")
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    off, on = runs["off"], runs["on"]
    print(f"gateway packing bench: {args.objects} synthetic 512x512 CT slices, storescu x "
          f"{args.assocs}, {args.syntax}, {args.pack_workers} packer processes, cloud down "
          "while receiving")
    print("| run | receive obj/s | receive CPU ms/obj | pack obj/s | pack CPU ms/obj | "
          "packer done after last receive | WAN bytes (ratio) | load |\n|---|---:|---:|---:|"
          "---:|---:|---:|---|")
    for name, r in (("compression off", off), ("compression on", on)):
        pack = (f"{r['pack_objects_per_second']:.0f} | {r['pack_cpu_ms_per_object']:.1f} | "
                f"{r['pack_finished_after_receive_s']:.1f} s" if "pack_objects_per_second" in r
                else "- | - | -")
        print(f"| {name} | {r['receive_objects_per_second']:.0f} | "
              f"{r['receive_cpu_ms_per_object']:.1f} | {pack} | "
              f"{r['bytes_sent'] / 1e6:.1f} MB ({r['wan_ratio']:.2f}:1) | {r['load']} |")
    if "pack_states" in on:
        print(f"pack outcomes: {on['pack_states']}")
    out = BENCH_DIR / "out"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    (out / f"gateway-pack-{stamp}.json").write_text(json.dumps(
        {"args": vars(args), "runs": runs}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=4)
    parser.add_argument("--slices", type=int, default=25)
    parser.add_argument("--size", type=int, default=512, help="rows=columns of each CT")
    parser.add_argument("--batch", type=int, default=20, help="objects per STOW-RS request")
    parser.add_argument("--concurrency", type=int, default=4, help="STOW-RS requests in flight")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--link", help="RATE_MBIT:RTT_MS, e.g. 100:20 (needs root, iproute2)")
    parser.add_argument("--gzip", action="store_true", help="the gateway sends gzip bodies")
    parser.add_argument("--orthanc", action="store_true",
                        help="with --link: also Debian's Orthanc forwarding to the cloud")
    parser.add_argument("--pixels", choices=["random", "phantom"], default="random",
                        help="random 12-bit noise (gzip ~1.15:1) or a noisy body phantom "
                             "in air, compressing like real CT (~2:1)")
    parser.add_argument("--pack", action="store_true",
                        help="measure lossless compression at the gateway instead")
    parser.add_argument("--objects", type=int, default=500, help="--pack: slices per run")
    parser.add_argument("--syntax", choices=sorted(SYNTAXES), default="jpegls")
    parser.add_argument("--pack-workers", type=int, default=2)
    parser.add_argument("--assocs", type=int, default=4, help="--pack: storescu processes")
    args = parser.parse_args()
    if args.pack:
        pack_main(args)
        return
    link = None
    if args.link:
        rate, rtt = (float(x) for x in args.link.split(":"))
        if (why := Link.available()) is not None:
            sys.exit(f"--link: {why}")
        link = Link(rate, rtt)
        link.up()
        os.environ["CLOUDFILM_HTTP__ALLOWED_HOSTS"] = f'["{link.outer}"]'

    WORK_DIR.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-", dir=WORK_DIR))
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:7.1f} s] {message}", file=sys.stderr, flush=True)

    def objects(tag: str) -> list[Any]:
        made = rig.studies(tag, args.studies, args.slices, size=args.size)
        if args.pixels == "phantom":
            for k, ds in enumerate(made):
                ds.PixelData = phantom(args.size, k)
        return made

    (workdir / "cloud").mkdir()
    server = kill9.Server(workdir / "cloud")
    server.prepare()
    server.start(timeout=90)
    results: dict[str, Any] = {}
    gw = None
    try:
        batch = objects("BENCH-DIRECT")
        megabytes = sum(len(to_bytes(ds)) for ds in batch) / 1e6
        sample = to_bytes(batch[0])
        ratio = len(sample) / len(zlib.compress(sample, 1))
        log(f"{len(batch)} objects, {megabytes:.1f} MB per run")
        files = [] if link is None else write_files(batch, workdir / "direct")
        t0 = time.perf_counter()
        if link is None:
            acked = direct_c_store(server, batch)
        else:
            acked = direct_storescu(link, link.relay(server.dicom_port), batch, files)
        results["direct C-STORE to the cloud"] = time.perf_counter() - t0
        log("direct done")

        (workdir / "gw").mkdir()
        cloud_url = (f"http://127.0.0.1:{server.http_port}" if link is None
                     else f"http://{link.outer}:{link.relay(server.http_port)}")
        extra: dict[str, Any] = {} if link is None else {"host": link.inner,
                                                        "prefix": link.prefix}
        gw = rig.Gateway(workdir / "gw", cloud_url, server.token, **extra,
                         queue={"quota_bytes": 20 * 1024**3},
                         forward={"batch_size": args.batch, "concurrency": args.concurrency,
                                  "retry_initial_seconds": 0.1, "retry_max_seconds": 0.3,
                                  "batch_bytes": 256 * 1024**2},
                         cloud={"timeout": 120.0, **({"gzip": True} if args.gzip else {})},
                         status={"heartbeat_seconds": 0.0})
        gw.start()
        server.stop()  # the link is down: the queue fills
        sender = rig.Sender(gw.dicom_port, host=gw.host)
        batch = objects("BENCH-DRAIN")
        t0 = time.perf_counter()
        sender.send(batch, deadline=600)
        results["C-STORE into the gateway (queue only)"] = time.perf_counter() - t0
        server.start(timeout=90)
        t0 = time.perf_counter()
        gw.wait_drained(timeout=600)
        results["gateway drains its queue to the cloud"] = time.perf_counter() - t0
        log("drain done")

        batch = objects("BENCH-THROUGH")
        t0 = time.perf_counter()
        sender.send(batch, deadline=600)
        gw.wait_drained(timeout=600)
        results["C-STORE through the gateway, until the cloud acknowledged"] = (
            time.perf_counter() - t0)
        log("through done")
        if link is not None and args.orthanc:
            seconds, more = orthanc_forward(link, server.dicom_port, objects("BENCH-ORTHANC"),
                                            log)
            results["Orthanc forwards (C-STORE to its peer), until it returned"] = seconds
            acked += more
        acked += sender.acked
        tally = rig.tally(server, acked)
    finally:
        if gw is not None:
            gw.stop()
        server.stop()
        if link is not None:
            link.down()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    ok = (tally.lost == [] and tally.differing == [] and tally.arrived == tally.acknowledged
          and tally.versions == 0)
    print(f"gateway bench: {args.studies} studies x {args.slices} slices of {args.size}x"
          f"{args.size} CT ({megabytes:.1f} MB), STOW-RS batches of {args.batch}, "
          f"{args.concurrency} in flight, "
          f"{'loopback' if link is None else 'link ' + link.describe()}"
          f"{', gzip' if args.gzip else ''}, {args.pixels} pixels (gzip -1 "
          f"{ratio:.2f}:1)")
    print(f"  {'run':<58} {'s':>7} {'MB/s':>7} {'obj/s':>7} {'% link':>7}")
    n = args.studies * args.slices
    for name, seconds in results.items():
        share = ("" if link is None or "queue only" in name
                 else f"{100 * megabytes * 8 / seconds / link.rate_mbit:6.0f}%")
        print(f"  {name:<58} {seconds:7.2f} {megabytes / seconds:7.1f} {n / seconds:7.1f}"
              f" {share:>7}")
    print(f"  verified: {tally.identical} of {tally.acknowledged} acknowledged objects "
          f"identical in the cloud, {len(tally.lost)} lost, {tally.versions} extra versions"
          f" -> {'OK' if ok else 'BROKEN'}")
    out = BENCH_DIR / "out"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    (out / f"gateway-{stamp}.json").write_text(json.dumps(
        {"args": vars(args), "megabytes": megabytes, "seconds": results,
         "lost": len(tally.lost), "identical": tally.identical}, indent=1))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
