"""Report benchmark: what diagnostic reports cost and how fast they are found and opened,
with Orthanc 1.10 beside cloudfilm on the same data in the same run.

    .venv/bin/python bench/report_bench.py [--quick] [--index sqlite|postgresql|both]

Per index backend:

1. STOW-RS of Chinese Structured Reports (50 per request, 4 clients) to both servers:
   cloudfilm also reads each SR into a report (text, versions, search keys) on ingest;
   Orthanc stores them as objects.
2. Opening a study's report, 200 studies: cloudfilm ``GET /api/v1/studies/{uid}/reports``
   (one request, text included); Orthanc has no report API, so the fewest requests a
   viewer needs there: QIDO the study's SR instances, then that instance's ``/metadata``
   (where the text is, in the content tree).
3. cloudfilm only (Orthanc cannot search inside reports): FHIR DiagnosticReport intake
   rate (4 clients), then full-text search over all reports for Chinese terms, p50/p95,
   and the HTML and PDF renderings of one report.

Prints a markdown table and writes it with the raw numbers to bench/out/.
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import queue
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from dicomweb_bench import new_client, stow_body, stow_parallel  # noqa: E402
from harness import PG_DSN, ManagedServer, ServerUnavailable  # noqa: E402
from orthanc import Orthanc  # noqa: E402
from server import Cloudfilm  # noqa: E402
from synth import to_bytes  # noqa: E402

OUT_DIR = BENCH_DIR / "out"
SEED = 20261128
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
FINDINGS = [
    "双肺纹理清晰，右肺上叶见一直径约{n}mm磨玻璃结节，边界清楚。",
    "左肺下叶见斑片状高密度影，边缘模糊。", "纵隔内未见肿大淋巴结。",
    "肝脏形态大小正常，肝右叶见一囊性低密度影，直径约{n}mm。", "胆囊壁毛糙，腔内见强回声。",
    "双侧基底节区见多发腔隙性梗死灶。", "脑室系统未见扩大，中线结构居中。",
    "心影大小正常，主动脉弓钙化。", "肾脏大小形态正常，未见积水。", "骨质未见明显破坏。",
]
IMPRESSIONS = ["右肺上叶磨玻璃结节，建议3个月后复查。", "左肺下叶炎症。", "肝囊肿。",
               "胆囊结石。", "多发腔隙性脑梗死。", "主动脉硬化。", "未见明显异常。"]
QUERIES = ["结节", "磨玻璃结节", "肝囊肿", "腔隙性脑梗死", "肺 炎症", "未见"]


def report_text(rng: random.Random) -> tuple[str, str]:
    findings = "".join(rng.choice(FINDINGS).format(n=rng.randint(3, 30))
                       for _ in range(rng.randint(2, 4)))
    return findings, rng.choice(IMPRESSIONS)


def make_sr(rng: random.Random, index: int) -> Dataset:
    """A small Chinese Comprehensive SR (findings and impression TEXT items)."""
    findings, impression = report_text(rng)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = COMPREHENSIVE_SR
    ds.SOPClassUID = COMPREHENSIVE_SR
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientID, ds.PatientName = f"RB{index:06d}", "王^小东"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20261101", "101500", f"RA{index:06d}"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "SR", 900, 1
    ds.ContentDate, ds.ContentTime = "20261101", "123000"
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "VERIFIED"
    observer = Dataset()
    observer.VerifyingObserverName, observer.VerificationDateTime = "张^主任", "20261101123000"
    observer.VerifyingOrganization = "Bench Hospital"
    observer.VerifyingObserverIdentificationCodeSequence = Sequence()
    ds.VerifyingObserverSequence = Sequence([observer])
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "CT 胸部平扫报告")])
    ds.ContentSequence = Sequence([_text("121071", "Findings", findings),
                                   _text("121073", "Impression", impression)])
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def _text(value: str, meaning: str, text: str) -> Dataset:
    item = Dataset()
    item.RelationshipType, item.ValueType = "CONTAINS", "TEXT"
    item.ConceptNameCodeSequence = Sequence([_code(value, "DCM", meaning)])
    item.TextValue = text
    return item


def fhir_report(rng: random.Random, index: int) -> bytes:
    findings, impression = report_text(rng)
    return json.dumps({
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": "urn:oid:1.2.156.9", "value": f"F{index:07d}"}],
        "status": "final", "code": {"text": "CT 胸部平扫"},
        "imagingStudy": [{"identifier": {"system": "urn:dicom:uid",
                                         "value": f"urn:oid:{generate_uid()}"}}],
        "effectiveDateTime": "2026-11-01T10:15:00+08:00",
        "issued": "2026-11-01T12:30:00+08:00", "conclusion": impression,
        "presentedForm": [{"contentType": "text/plain; charset=utf-8",
                           "data": base64.b64encode(findings.encode()).decode()}],
    }, ensure_ascii=False).encode()


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.95) - 1)]


def timed(client: httpx.Client, urls: list[str], **kwargs: Any) -> list[float]:
    took = []
    for url in urls:
        start = time.perf_counter()
        response = client.get(url, **kwargs)
        took.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    return took


# -- measurements ---------------------------------------------------------------------------


def stow_srs(server: ManagedServer, srs: list[bytes]) -> dict[str, float]:
    bodies = [stow_body(srs[i:i + 50]) for i in range(0, len(srs), 50)]
    cpu = server.cpu_seconds()
    stored, failed, took = stow_parallel(server.dicomweb, bodies, 4)
    cpu = server.cpu_seconds() - cpu
    return {"stored": stored, "failed": failed, "rate": stored / took,
            "cpu_ms": cpu * 1000 / max(stored, 1)}


def open_reports_cloudfilm(server: Cloudfilm, studies: list[str]) -> list[float]:
    api = server.dicomweb.rsplit("/", 1)[0] + "/api/v1"
    with new_client() as client:
        timed(client, [f"{api}/studies/{u}/reports" for u in studies[:5]])
        took = timed(client, [f"{api}/studies/{u}/reports" for u in studies])
        assert client.get(f"{api}/studies/{studies[0]}/reports").json()[0]["findings"]
    return took


def open_reports_orthanc(server: Orthanc, studies: list[str]) -> list[float]:
    took = []
    with new_client() as client:
        for index, uid in enumerate(studies):
            start = time.perf_counter()
            found = client.get(f"{server.dicomweb}/studies/{uid}/instances",
                               params={"Modality": "SR"},
                               headers={"Accept": "application/dicom+json"}).json()
            series = found[0]["0020000E"]["Value"][0]
            sop = found[0]["00080018"]["Value"][0]
            meta = client.get(f"{server.dicomweb}/studies/{uid}/series/{series}/instances/"
                              f"{sop}/metadata", headers={"Accept": "application/dicom+json"})
            meta.raise_for_status()
            assert "0040A730" in meta.json()[0]  # the content tree, with the text
            if index >= 5:  # warm-up excluded, as for cloudfilm
                took.append((time.perf_counter() - start) * 1000)
    return took


def fhir_intake(server: Cloudfilm, bodies: list[bytes]) -> float:
    api = server.dicomweb.rsplit("/", 1)[0] + "/api/v1"
    work: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    for body in bodies:
        work.put(body)

    def worker() -> int:
        done = 0
        with new_client() as client:
            while True:
                try:
                    body = work.get_nowait()
                except queue.Empty:
                    return done
                response = client.post(f"{api}/fhir/DiagnosticReport", content=body,
                                       headers={"Content-Type": "application/fhir+json"})
                done += response.status_code in (200, 201)

    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        done = sum(f.result() for f in [pool.submit(worker) for _ in range(4)])
    took = time.perf_counter() - start
    if done != len(bodies):
        raise RuntimeError(f"only {done} of {len(bodies)} FHIR reports were accepted")
    return done / took


def analyze(database: str) -> None:
    """What autovacuum does in production: this machine's PostgreSQL runs with autovacuum
    off, and without statistics the planner sorts every match of a frequent term instead
    of walking the (listed_at, id) index (43 ms instead of 0.09 ms at 23,000 reports)."""
    import psycopg

    with psycopg.connect(PG_DSN.replace("dbname=postgres", f"dbname={database}"),
                         autocommit=True) as conn:
        conn.execute("ANALYZE")


def search_and_render(server: Cloudfilm, rounds: int) -> dict[str, Any]:
    api = server.dicomweb.rsplit("/", 1)[0] + "/api/v1"
    out: dict[str, Any] = {}
    with new_client() as client:
        for q in QUERIES:
            client.get(f"{api}/reports", params={"q": q, "limit": 20})
            took = timed(client, [f"{api}/reports?limit=20&q={q}"] * rounds)
            hits = len(client.get(f"{api}/reports", params={"q": q, "limit": 20}).json())
            out[f"search {q}"] = (*percentiles(took), hits)
        some = client.get(f"{api}/reports", params={"limit": 1}).json()[0]["report_id"]
        out["html"] = percentiles(timed(client, [f"{api}/reports/{some}/html"] * rounds))
        out["pdf"] = percentiles(timed(client, [f"{api}/reports/{some}/pdf"] * 10))
    return out


def run(index: str, n_sr: int, n_fhir: int, rounds: int) -> dict[str, Any]:
    rng = random.Random(SEED)
    datasets = [make_sr(rng, i) for i in range(n_sr)]
    srs = [to_bytes(ds) for ds in datasets]
    studies = [str(ds.StudyInstanceUID) for ds in datasets]
    sample = random.Random(1).sample(studies, min(200, len(studies)))
    results: dict[str, Any] = {"index": index}
    with Orthanc(index=index) as orthanc:
        results["orthanc_stow"] = stow_srs(orthanc, srs)
        results["orthanc_open"] = percentiles(open_reports_orthanc(orthanc, sample))
    with Cloudfilm(index=index) as cloudfilm:
        results["cloudfilm_stow"] = stow_srs(cloudfilm, srs)
        results["cloudfilm_open"] = percentiles(open_reports_cloudfilm(cloudfilm, sample))
        bodies = [fhir_report(rng, i) for i in range(n_fhir)]
        results["fhir_rate"] = fhir_intake(cloudfilm, bodies)
        results["reports_total"] = n_sr + n_fhir
        if cloudfilm.pg_database:
            analyze(cloudfilm.pg_database)
        results.update(search_and_render(cloudfilm, rounds))
    return results


def table(all_results: list[dict[str, Any]]) -> str:
    lines = ["| measurement | " + " | ".join(
        f"Orthanc {r['index']} | cloudfilm {r['index']}" for r in all_results) + " |",
        "|---|" + "---|---|" * len(all_results)]

    def row(name: str, orthanc: list[str], cloudfilm: list[str]) -> None:
        cells = [c for pair in zip(orthanc, cloudfilm, strict=True) for c in pair]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    row("STOW-RS of Chinese SRs, 50/request, 4 clients (inst/s)",
        [f"{r['orthanc_stow']['rate']:.0f}" for r in all_results],
        [f"{r['cloudfilm_stow']['rate']:.0f}" for r in all_results])
    row("server CPU per SR (ms)",
        [f"{r['orthanc_stow']['cpu_ms']:.2f}" for r in all_results],
        [f"{r['cloudfilm_stow']['cpu_ms']:.2f}" for r in all_results])
    row("open a study's report, p50 / p95 (ms)",
        [f"{r['orthanc_open'][0]:.1f} / {r['orthanc_open'][1]:.1f}" for r in all_results],
        [f"{r['cloudfilm_open'][0]:.1f} / {r['cloudfilm_open'][1]:.1f}" for r in all_results])
    row("FHIR DiagnosticReport intake, 4 clients (reports/s)", ["n/a"] * len(all_results),
        [f"{r['fhir_rate']:.0f}" for r in all_results])
    for q in QUERIES:
        row(f"search `{q}` over all reports, p50 / p95 (ms) [hits of 20]",
            ["no text search"] * len(all_results),
            [f"{r[f'search {q}'][0]:.1f} / {r[f'search {q}'][1]:.1f} [{r[f'search {q}'][2]}]"
             for r in all_results])
    row("report as HTML, p50 / p95 (ms)", ["n/a"] * len(all_results),
        [f"{r['html'][0]:.1f} / {r['html'][1]:.1f}" for r in all_results])
    row("report as PDF (Chinese fonts), p50 / p95 (ms)", ["n/a"] * len(all_results),
        [f"{r['pdf'][0]:.0f} / {r['pdf'][1]:.0f}" for r in all_results])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small data, ~1-2 min")
    parser.add_argument("--index", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    n_sr, n_fhir, rounds = (500, 1000, 20) if args.quick else (3000, 20000, 50)
    indexes = ["sqlite", "postgresql"] if args.index == "both" else [args.index]
    results = []
    for index in indexes:
        try:
            results.append(run(index, n_sr, n_fhir, rounds))
        except ServerUnavailable as exc:
            print(f"skipping {index}: {exc}", file=sys.stderr)
    text = table(results)
    total = f"{n_sr} SRs + {n_fhir} FHIR reports"
    print(f"\n{total}; {platform.node()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n{text}")
    OUT_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    (OUT_DIR / f"report_bench_{stamp}.md").write_text(f"{total}\n\n{text}\n")
    (OUT_DIR / f"report_bench_{stamp}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
