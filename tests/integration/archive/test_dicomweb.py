"""DICOMweb through HTTP on both databases: STOW-RS, QIDO-RS, WADO-RS, WADO-URI."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.uid import generate_uid
from tests.factories import make_ct, multipart, split_multipart, to_bytes

ANY_TS = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def stow(client: Any, objects: list[bytes], url: str = "/dicomweb/studies") -> Any:
    body, content_type = multipart(objects)
    return client.post(url, content=body, headers={"Content-Type": content_type})


def value(item: dict[str, Any], tag: str) -> Any:
    return item[tag]["Value"][0]


@pytest.fixture
def study(client: Any) -> dict[str, Any]:
    """One study of two series (3 + 2 instances) for patient P0001."""
    study_uid, series = generate_uid(), [generate_uid(), generate_uid()]
    objects = [to_bytes(make_ct(study_uid=study_uid, series_uid=series[0], instance_number=i))
               for i in (1, 2, 3)]
    objects += [to_bytes(make_ct(study_uid=study_uid, series_uid=series[1], instance_number=i,
                                 Modality="SR" if False else "CT", SeriesNumber=2))
                for i in (1, 2)]
    assert stow(client, objects).status_code == 200
    return {"study": study_uid, "series": series, "objects": objects}


def test_stow_answers_the_standard_response(client: Any) -> None:
    ds = make_ct()
    response = stow(client, [to_bytes(ds)])
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom+json")
    body = response.json()
    ref = body["00081199"]["Value"][0]
    assert value(ref, "00081155") == ds.SOPInstanceUID
    assert value(ref, "00081190").endswith(f"/instances/{ds.SOPInstanceUID}")
    assert value(body, "00081190").endswith(f"/studies/{ds.StudyInstanceUID}")


def test_stow_partial_failure_is_202_and_total_failure_409(client: Any) -> None:
    good, bad = to_bytes(make_ct()), to_bytes(make_ct(PatientID="X" * 70))
    mixed = stow(client, [good, bad])
    assert mixed.status_code == 202
    failed = mixed.json()["00081198"]["Value"][0]
    assert value(failed, "00081197") == 0xC000
    assert "PatientID" in value(failed, "0040A160")
    assert stow(client, [bad]).status_code == 409
    assert stow(client, [b"not dicom at all" * 20]).status_code == 409


def test_stow_to_a_study_refuses_objects_of_another_study(client: Any) -> None:
    response = stow(client, [to_bytes(make_ct())], url=f"/dicomweb/studies/{generate_uid()}")
    assert response.status_code == 409
    assert value(response.json()["00081198"]["Value"][0], "00081197") == 0xA900


def test_stow_resend_is_harmless(client: Any) -> None:
    data = to_bytes(make_ct())
    assert stow(client, [data]).status_code == 200
    assert stow(client, [data]).status_code == 200
    assert len(client.get("/dicomweb/instances").json()) == 1


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"--b\r\nContent-Type: application/dicom\r\n\r\nabc", 'multipart/related; boundary=b',
         400),
        (b"hello", "application/json", 415),
        (b"--b--\r\n", 'multipart/related; type="application/dicom+xml"; boundary=b', 415),
        (b"--b--\r\n", "multipart/related", 400),
    ],
)
def test_stow_bad_requests_are_clear_and_store_nothing(
    client: Any, body: bytes, content_type: str, status: int
) -> None:
    response = client.post("/dicomweb/studies", content=body,
                           headers={"Content-Type": content_type})
    assert response.status_code == status
    assert response.json()["message"]
    assert client.get("/dicomweb/studies").json() == []


def test_stow_truncated_upload_stores_nothing(client: Any) -> None:
    body, content_type = multipart([to_bytes(make_ct()), to_bytes(make_ct())])
    response = client.post("/dicomweb/studies", content=body[: len(body) // 2 + 40],
                           headers={"Content-Type": content_type})
    assert response.status_code == 400
    assert "truncated" in response.json()["message"]
    assert client.get("/dicomweb/instances").json() == []


def test_stow_oversized_upload_is_413(client: Any, services: Any) -> None:
    object.__setattr__(services.limits, "max_upload_bytes", 2048)
    response = stow(client, [to_bytes(make_ct(size=64))])
    assert response.status_code == 413
    assert "CLOUDFILM_HTTP__MAX_UPLOAD_BYTES" in response.json()["message"]


def test_stow_single_bare_object(client: Any) -> None:
    response = client.post("/dicomweb/studies", content=to_bytes(make_ct()),
                           headers={"Content-Type": "application/dicom"})
    assert response.status_code == 200


def test_qido_studies_by_patient_and_counts(client: Any, study: dict[str, Any]) -> None:
    stow(client, [to_bytes(make_ct(patient_id="OTHER"))])
    found = client.get("/dicomweb/studies", params={"PatientID": "P0001"}).json()
    assert [value(s, "0020000D") for s in found] == [study["study"]]
    assert value(found[0], "00201206") == 2
    assert value(found[0], "00201208") == 5
    assert found[0]["00080061"]["Value"] == ["CT"]
    assert value(found[0], "00081190").startswith("http://testserver/dicomweb/studies/")


@pytest.mark.parametrize(
    ("params", "hits"),
    [
        ({"PatientName": "wang"}, 1),
        ({"PatientName": "王小东"}, 1),
        ({"PatientName": "小东"}, 1),
        ({"PatientName": "xiao*"}, 1),
        ({"PatientName": "li"}, 0),
        ({"PatientName": "ong", "fuzzymatching": "true"}, 1),
        ({"StudyDate": "20240101-20240131"}, 1),
        ({"StudyDate": "-20231231"}, 0),
        ({"StudyDate": "20240105"}, 1),
        ({"00100020": "P000?"}, 1),
        ({"PatientID": "P*"}, 1),
        ({"ModalitiesInStudy": "CT"}, 1),
        ({"ModalitiesInStudy": "MR"}, 0),
        ({"StudyDescription": "CT*"}, 1),
    ],
)
def test_qido_matching(client: Any, params: dict[str, str], hits: int) -> None:
    ds = make_ct(patient_name="Wang^XiaoDong=王^小东")
    assert stow(client, [to_bytes(ds)]).status_code == 200
    assert len(client.get("/dicomweb/studies", params=params).json()) == hits


def test_qido_uid_list_limit_offset(client: Any) -> None:
    uids = [generate_uid() for _ in range(4)]
    stow(client, [to_bytes(make_ct(study_uid=u)) for u in uids])
    listed = client.get("/dicomweb/studies", params={"StudyInstanceUID": ",".join(uids[:3])})
    assert len(listed.json()) == 3
    page1 = client.get("/dicomweb/studies", params={"limit": 2}).json()
    page2 = client.get("/dicomweb/studies", params={"limit": 2, "offset": 2}).json()
    seen = [value(s, "0020000D") for s in page1 + page2]
    assert sorted(seen) == sorted(uids)
    assert "Warning" in client.get("/dicomweb/studies", params={"limit": 2}).headers


def test_qido_nested_series_and_instances(client: Any, study: dict[str, Any]) -> None:
    series = client.get(f"/dicomweb/studies/{study['study']}/series").json()
    assert [value(s, "00201209") for s in series] == [3, 2]
    instances = client.get(
        f"/dicomweb/studies/{study['study']}/series/{study['series'][0]}/instances").json()
    assert [value(i, "00200013") for i in instances] == [1, 2, 3]
    with_all = client.get(f"/dicomweb/studies/{study['study']}/instances",
                          params={"includefield": "all"}).json()
    assert len(with_all) == 5 and "00100010" in with_all[0]
    picked = client.get(f"/dicomweb/studies/{study['study']}/instances",
                        params={"includefield": "ImagePositionPatient"}).json()
    assert "00200032" in picked[0]


@pytest.mark.parametrize(
    "params",
    [{"NoSuchKeyword": "x"}, {"StudyDate": "2024-01-01"}, {"limit": "-1"},
     {"SeriesNumber": "abc"}, {"SOPInstanceUID": "1.2"}],
)
def test_qido_bad_parameters_are_400(client: Any, params: dict[str, str]) -> None:
    response = client.get("/dicomweb/studies", params=params)
    assert response.status_code == 400
    assert response.json()["message"]


def test_wado_instance_is_bit_identical(client: Any, study: dict[str, Any]) -> None:
    ds = dcmread(io.BytesIO(study["objects"][0]))
    url = (f"/dicomweb/studies/{study['study']}/series/{study['series'][0]}"
           f"/instances/{ds.SOPInstanceUID}")
    response = client.get(url, headers={"Accept": ANY_TS})
    assert response.status_code == 200
    parts = split_multipart(response.content, response.headers["content-type"])
    assert [p[1] for p in parts] == [study["objects"][0]]
    assert "transfer-syntax=1.2.840.10008.1.2.1" in parts[0][0]


def test_wado_study_streams_every_instance(client: Any, study: dict[str, Any]) -> None:
    response = client.get(f"/dicomweb/studies/{study['study']}", headers={"Accept": ANY_TS})
    parts = split_multipart(response.content, response.headers["content-type"])
    assert sorted(p[1] for p in parts) == sorted(study["objects"])


def test_wado_metadata_has_bulk_data_uris(client: Any, study: dict[str, Any]) -> None:
    url = f"/dicomweb/studies/{study['study']}/series/{study['series'][0]}/metadata"
    docs = client.get(url).json()
    assert len(docs) == 3
    pixel = docs[0]["7FE00010"]
    assert pixel["BulkDataURI"].startswith("http://testserver/dicomweb/studies/")
    bulk = client.get(pixel["BulkDataURI"].replace("http://testserver", ""))
    assert bulk.status_code == 200


def test_wado_frames_and_rendered(client: Any, study: dict[str, Any]) -> None:
    ds = dcmread(io.BytesIO(study["objects"][0]))
    base = (f"/dicomweb/studies/{study['study']}/series/{study['series'][0]}"
            f"/instances/{ds.SOPInstanceUID}")
    frames = client.get(f"{base}/frames/1",
                        headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    assert frames.status_code == 200
    parts = split_multipart(frames.content, frames.headers["content-type"])
    assert parts[0][1] == ds.PixelData
    jpeg = client.get(f"{base}/rendered", headers={"Accept": "image/jpeg"})
    assert jpeg.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(jpeg.content)).size == (32, 32)
    png = client.get(f"{base}/rendered", params={"viewport": "64,64", "window": "40,400"},
                     headers={"Accept": "image/png"})
    assert Image.open(io.BytesIO(png.content)).size == (64, 64)
    thumb = client.get(f"{base}/thumbnail")
    assert thumb.status_code == 200
    assert client.get(f"{base}/frames/2").status_code == 404
    assert client.get(f"{base}/rendered", headers={"Accept": "image/webp"}).status_code == 406


def test_wado_unknown_uids_are_404(client: Any, study: dict[str, Any]) -> None:
    assert client.get(f"/dicomweb/studies/{generate_uid()}").status_code == 404
    guessed = (f"/dicomweb/studies/{study['study']}/series/{study['series'][0]}"
               f"/instances/{generate_uid()}")
    assert client.get(guessed).status_code == 404
    assert client.get(f"/dicomweb/studies/{generate_uid()}/metadata").status_code == 404


def test_wado_not_acceptable(client: Any, study: dict[str, Any]) -> None:
    url = f"/dicomweb/studies/{study['study']}"
    assert client.get(url, headers={"Accept": "text/html"}).status_code == 406
    asked = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    assert client.get(url, headers={"Accept": asked}).status_code == 406


def test_wado_uri(client: Any, study: dict[str, Any]) -> None:
    ds = dcmread(io.BytesIO(study["objects"][0]))
    params = {"requestType": "WADO", "studyUID": study["study"],
              "seriesUID": study["series"][0], "objectUID": ds.SOPInstanceUID}
    jpeg = client.get("/wado", params=params)
    assert jpeg.headers["content-type"] == "image/jpeg"
    raw = client.get("/dicomweb/wado", params={**params, "contentType": "application/dicom"})
    assert raw.content == study["objects"][0]
    assert client.get("/wado", params={**params, "requestType": "X"}).status_code == 400


def test_healthz_and_metrics(client: Any) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["database"] == "ok"
    client.get("/dicomweb/studies")
    assert "cloudfilm_http_requests_total" in client.get("/metrics").text


def test_concurrent_single_instance_stows_share_one_index_transaction(client: Any) -> None:
    """One-object STOW-RS requests arriving together go through the group commit: fewer
    ``ingest_files`` calls (index transactions) than requests, each answered with its own
    object only after the batch holding it returned."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    group = client.app.state.services.ingest._group
    real = group._ingest_files
    batches: list[int] = []
    gate = threading.Event()

    def held(items: list[Any], *, sender: Any) -> list[Any]:
        gate.wait(5)  # the first batch waits until the other requests queued behind it
        batches.append(len(items))
        return real(items, sender=sender)

    group._ingest_files = held
    try:
        objects = [make_ct(study_uid=generate_uid(), instance_number=1) for _ in range(6)]
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(stow, client, [to_bytes(ds)]) for ds in objects]
            deadline = threading.Event()
            for _ in range(50):  # until every request waits in the group commit
                if len(group._waiting) >= 5:
                    break
                deadline.wait(0.1)
            gate.set()
            answers = [f.result(timeout=30) for f in futures]
    finally:
        group._ingest_files = real
    for ds, answer in zip(objects, answers, strict=True):
        assert answer.status_code == 200
        assert value(answer.json()["00081199"]["Value"][0], "00081155") == ds.SOPInstanceUID
    assert sum(batches) == 6
    assert len(batches) < 6, f"nothing was batched: {batches}"
    assert len(client.get("/dicomweb/instances").json()) == 6
