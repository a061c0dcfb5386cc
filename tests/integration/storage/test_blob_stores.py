"""The BlobStore contract on every backend, plus what only the local folder promises.

S3 runs over real HTTP against moto's server mode on 127.0.0.1, so botocore's retries,
multipart uploads and error parsing are exercised as they are against MinIO or AWS.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from cloudfilm.infrastructure.storage import local as local_module
from cloudfilm.infrastructure.storage import s3 as s3_module
from cloudfilm.infrastructure.storage.base import (
    BlobInfo,
    BlobNotFoundError,
    BlobStore,
    BlobStoreError,
    blob_key,
)
from cloudfilm.infrastructure.storage.factory import open_blob_store
from cloudfilm.infrastructure.storage.local import LocalBlobStore, validate_key
from cloudfilm.infrastructure.storage.memory import MemoryBlobStore
from cloudfilm.infrastructure.storage.s3 import S3BlobStore

REGION = "us-east-1"
CREDENTIALS = {"access_key": "testing", "secret_key": "testing"}
KEY = blob_key(hashlib.sha256(b"first").hexdigest())
DATA = b"0123456789abcdefghij" * 5  # 100 bytes
BAD_KEYS = [
    "",
    "/etc/passwd",
    "../escape.dcm",
    "ab/../../escape.dcm",
    "ab//cd.dcm",
    "ab/./cd.dcm",
    "ab/",
    "ab\\cd.dcm",
    "has space.dcm",
    "naïve.dcm",
    ".tmp/put-1.part",
]


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3_admin(s3_endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _new_bucket(s3_admin: Any) -> str:
    bucket = f"cloudfilm-{uuid.uuid4().hex[:12]}"
    s3_admin.create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(scope="module")
def shared_s3_store(s3_endpoint: str, s3_admin: Any) -> S3BlobStore:
    # One store for the module: building a boto3 client loads the S3 model (~0.1 s), which
    # per test would dominate this file's run time.
    return S3BlobStore(
        _new_bucket(s3_admin),
        prefix="archive/",
        endpoint_url=s3_endpoint,
        region=REGION,
        **CREDENTIALS,
    )


@pytest.fixture(params=["local", "memory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    if request.param == "memory":
        return MemoryBlobStore()
    s3_store: S3BlobStore = request.getfixturevalue("shared_s3_store")
    for blob in list(s3_store.iter_blobs()):
        s3_store.delete(blob.key)
    return s3_store


@pytest.fixture
def write(tmp_path: Path) -> Callable[[bytes], Path]:
    """Write bytes to a fresh source file outside any store."""
    src_dir = tmp_path / "incoming"
    src_dir.mkdir()

    def _write(data: bytes) -> Path:
        path = src_dir / uuid.uuid4().hex
        path.write_bytes(data)
        return path

    return _write


@pytest.fixture
def local_store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


# -- the contract, on every backend -------------------------------------------------------


def test_put_then_open_reads_the_same_bytes_seekably(
    store: BlobStore, write: Callable[[bytes], Path]
) -> None:
    source = write(DATA)
    store.put_file(KEY, source)

    assert source.read_bytes() == DATA  # move=False leaves the source alone
    with store.open(KEY) as fh:
        assert fh.read() == DATA
        fh.seek(10)
        assert fh.read(5) == DATA[10:15]


def test_iter_chunks_streams_the_whole_blob(
    store: BlobStore, write: Callable[[bytes], Path]
) -> None:
    store.put_file(KEY, write(DATA))

    chunks = list(store.iter_chunks(KEY, chunk_size=32))

    assert b"".join(chunks) == DATA
    assert all(0 < len(c) <= 32 for c in chunks)


@pytest.mark.parametrize(
    ("offset", "length", "expected"),
    [
        (0, 10, DATA[:10]),
        (37, 20, DATA[37:57]),
        (95, 50, DATA[95:]),  # fewer bytes at the end
        (100, 10, b""),  # at the end
        (500, 10, b""),  # past the end
        (5, 0, b""),
    ],
)
def test_read_range(
    store: BlobStore,
    write: Callable[[bytes], Path],
    offset: int,
    length: int,
    expected: bytes,
) -> None:
    store.put_file(KEY, write(DATA))

    assert store.read_range(KEY, offset, length) == expected


def test_exists_size_delete(store: BlobStore, write: Callable[[bytes], Path]) -> None:
    assert not store.exists(KEY)

    store.put_file(KEY, write(DATA))
    assert store.exists(KEY)
    assert store.size(KEY) == len(DATA)

    store.delete(KEY)
    assert not store.exists(KEY)
    store.delete(KEY)  # already absent: no error


def test_iter_blobs_lists_every_blob(store: BlobStore, write: Callable[[bytes], Path]) -> None:
    assert list(store.iter_blobs()) == []
    contents = {blob_key(hashlib.sha256(d).hexdigest()): d for d in (b"a", b"bb", b"ccc")}
    contents["flat.dcm"] = b"flat"
    for key, data in contents.items():
        store.put_file(key, write(data))

    listed = sorted(store.iter_blobs(), key=lambda b: b.key)

    assert listed == sorted(
        (BlobInfo(key=k, size=len(d)) for k, d in contents.items()), key=lambda b: b.key
    )


def test_modified_at_is_the_write_time(store: BlobStore, write: Callable[[bytes], Path]) -> None:
    before = time.time()
    store.put_file(KEY, write(DATA))
    after = time.time()

    # S3 keeps whole seconds.
    assert before - 1.5 <= store.modified_at(KEY) <= after + 1.5


def test_check_passes_on_a_working_store(store: BlobStore) -> None:
    store.check()


def test_put_replaces_an_existing_key(store: BlobStore, write: Callable[[bytes], Path]) -> None:
    store.put_file(KEY, write(b"old content, longer"))
    store.put_file(KEY, write(b"new"))

    with store.open(KEY) as fh:
        assert fh.read() == b"new"
    assert store.size(KEY) == 3
    assert list(store.iter_blobs()) == [BlobInfo(key=KEY, size=3)]


def test_move_consumes_the_source(store: BlobStore, write: Callable[[bytes], Path]) -> None:
    source = write(DATA)

    store.put_file(KEY, source, move=True)

    assert not source.exists()
    assert store.read_range(KEY, 0, 1000) == DATA


def test_large_blob_round_trip(store: BlobStore, write: Callable[[bytes], Path]) -> None:
    # Above boto3's 8 MiB multipart threshold and the 8 MiB in-memory spool of S3 open().
    data = os.urandom(9 << 20)
    store.put_file(KEY, write(data))

    with store.open(KEY) as fh:
        assert hashlib.sha256(fh.read()).digest() == hashlib.sha256(data).digest()
    assert store.read_range(KEY, (9 << 20) - 4, 100) == data[-4:]


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.open(KEY),
        lambda s: s.iter_chunks(KEY),  # raises on the call, before any iteration
        lambda s: s.read_range(KEY, 0, 10),
        lambda s: s.read_range(KEY, 0, 0),
        lambda s: s.size(KEY),
        lambda s: s.modified_at(KEY),
    ],
    ids=["open", "iter_chunks", "read_range", "read_range_empty", "size", "modified_at"],
)
def test_missing_key_raises_blob_not_found(store: BlobStore, call: Callable[[Any], Any]) -> None:
    with pytest.raises(BlobNotFoundError, match="no blob stored under"):
        call(store)


def test_unreadable_source_raises_blob_store_error(store: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(BlobStoreError, match=KEY):
        store.put_file(KEY, tmp_path / "does-not-exist")
    assert not store.exists(KEY)


@pytest.mark.parametrize("bad_key", BAD_KEYS)
def test_bad_keys_are_rejected(
    store: BlobStore, write: Callable[[bytes], Path], bad_key: str
) -> None:
    source = write(DATA)
    for call in (
        lambda: store.put_file(bad_key, source),
        lambda: store.open(bad_key),
        lambda: store.exists(bad_key),
        lambda: store.delete(bad_key),
    ):
        with pytest.raises(ValueError, match="invalid blob key"):
            call()
    assert list(store.iter_blobs()) == []


def test_local_path_only_for_local_store(store: BlobStore, write: Callable[[bytes], Path]) -> None:
    store.put_file(KEY, write(DATA))

    path = store.local_path(KEY)

    if isinstance(store, LocalBlobStore):
        assert path is not None
        assert path.read_bytes() == DATA
        with pytest.raises(BlobNotFoundError):
            store.local_path("absent.dcm")
    else:
        assert path is None


# -- local folder specifics ---------------------------------------------------------------


def test_validate_key_accepts_blob_keys() -> None:
    key = blob_key("AB" * 32)
    assert validate_key(key) == key
    assert validate_key("a-b_c.d/e.f") == "a-b_c.d/e.f"


def test_local_layout_and_empty_temp_folder(
    local_store: LocalBlobStore, write: Callable[[bytes], Path]
) -> None:
    local_store.put_file(KEY, write(DATA))
    other = blob_key(hashlib.sha256(b"other").hexdigest())
    local_store.put_file(other, write(b"other"), move=True)

    first, second, name = KEY.split("/")
    assert (local_store.root / first / second / name).read_bytes() == DATA
    assert list((local_store.root / ".tmp").iterdir()) == []


def test_local_move_renames_without_copying(
    local_store: LocalBlobStore, write: Callable[[bytes], Path]
) -> None:
    source = write(DATA)
    year_ago = time.time() - 365 * 86400
    os.utime(source, (year_ago, year_ago))
    inode = source.stat().st_ino

    local_store.put_file(KEY, source, move=True)

    assert (local_store.root / KEY).stat().st_ino == inode
    # The orphan sweeper reads mtime as the write time; an old source must not look old.
    assert local_store.modified_at(KEY) > time.time() - 60


def test_local_move_across_filesystems_copies_then_removes_source(
    local_store: LocalBlobStore, write: Callable[[bytes], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write(DATA)
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(src) == source:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)

    def link(src: Any, dst: Any) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "link", link)

    local_store.put_file(KEY, source, move=True)

    assert not source.exists()
    assert (local_store.root / KEY).read_bytes() == DATA
    assert list((local_store.root / ".tmp").iterdir()) == []


def test_local_put_fsyncs_the_new_folders(
    local_store: LocalBlobStore, write: Callable[[bytes], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    blob_there_when_leaf_synced: list[bool] = []
    real = local_module._fsync_path
    root = local_store.root
    first, second, _ = KEY.split("/")

    def spy(path: Path) -> None:
        synced.append(Path(path))
        if Path(path) == root / first / second:
            blob_there_when_leaf_synced.append((root / KEY).exists())
        real(path)

    monkeypatch.setattr(local_module, "_fsync_path", spy)

    local_store.put_file(KEY, write(DATA))
    # Each created folder's entry lives in its parent, so the root and both levels are
    # synced (the parents beside the blob's own fsync, in any order), all before put_file
    # returns; the leaf after the blob's rename, since it must record the blob's entry.
    assert sorted(synced) == sorted([root / first / second, root / first, root])
    assert blob_there_when_leaf_synced == [True]

    synced.clear()
    sibling = KEY[:-5] + "0.dcm"  # same folders, already made durable
    local_store.put_file(sibling, write(DATA))
    assert synced == [root / first / second]

    # A new store object (a restarted process) cannot know whether the folders it finds
    # were ever fsynced into their parents, so it syncs them again once.
    synced.clear()
    restarted = LocalBlobStore(root)
    restarted.put_file(KEY, write(DATA))
    restarted.put_file(sibling, write(DATA))
    assert sorted(synced[:3]) == sorted([root / first / second, root / first, root])
    assert synced[3:] == [root / first / second]


def test_local_put_syncs_new_folders_while_the_blob_is_synced(
    local_store: LocalBlobStore, write: Callable[[bytes], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new folders' fsyncs overlap the blob's data fsync (one wait, not three in a
    row): the data fsync sees the root's fsync under way before it finishes."""
    real_fsync = os.fsync
    real_sync_path = local_module._fsync_path
    root_started = threading.Event()
    overlapped: list[bool] = []

    def sync_path(path: Path) -> None:
        if Path(path) == local_store.root:
            root_started.set()
        real_sync_path(path)

    def fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):  # the blob's data, not a folder
            overlapped.append(root_started.wait(timeout=10))
        real_fsync(fd)

    monkeypatch.setattr(local_module, "_fsync_path", sync_path)
    monkeypatch.setattr(os, "fsync", fsync)
    local_store.put_file(KEY, write(DATA))
    assert overlapped == [True]


def test_local_put_fails_when_a_new_folder_cannot_be_synced(
    local_store: LocalBlobStore, write: Callable[[bytes], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parent's fsync runs on another thread; its failure is still put_file's failure,
    and the folder is not taken for durable (the next put syncs it again)."""
    real = local_module._fsync_path
    root = local_store.root
    first = KEY.split("/")[0]
    failing = [True]

    def parent_fails(path: Path) -> None:
        if Path(path) == root and failing[0]:
            raise OSError(errno.EIO, "Input/output error")
        real(path)

    monkeypatch.setattr(local_module, "_fsync_path", parent_fails)
    with pytest.raises(BlobStoreError, match="Input/output error"):
        local_store.put_file(KEY, write(DATA))

    synced: list[Path] = []
    failing[0] = False

    def spy(path: Path) -> None:
        synced.append(Path(path))
        real(path)

    monkeypatch.setattr(local_module, "_fsync_path", spy)
    local_store.put_file(KEY, write(DATA))
    assert root in synced and root / first in synced


def test_local_move_of_a_new_blob_syncs_its_data_and_folder_together(
    local_store: LocalBlobStore, write: Callable[[bytes], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new key is hard-linked into place, then its data and its folder entry are fsynced
    at once (one flush in a row, not two); the source goes only once both are durable."""
    source = write(DATA)
    inode = source.stat().st_ino
    leaf = local_store.root / KEY.rsplit("/", 1)[0]
    local_store.put_file(KEY[:-5] + "0.dcm", write(DATA))  # the folders are durable now
    real_fsync = os.fsync
    real_sync_path = local_module._fsync_path
    leaf_started = threading.Event()
    overlapped: list[bool] = []
    source_there: list[bool] = []

    def sync_path(path: Path) -> None:
        if Path(path) == leaf:
            leaf_started.set()
        real_sync_path(path)

    def fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):  # the blob's data, not a folder
            overlapped.append(leaf_started.wait(timeout=10))
            source_there.append(source.exists())
        real_fsync(fd)

    monkeypatch.setattr(local_module, "_fsync_path", sync_path)
    monkeypatch.setattr(os, "fsync", fsync)
    local_store.put_file(KEY, source, move=True)

    assert overlapped == [True]
    assert source_there == [True]  # a failed fsync would have kept the source
    assert not source.exists()
    assert (local_store.root / KEY).stat().st_ino == inode
    assert (local_store.root / KEY).read_bytes() == DATA


def test_local_move_onto_an_existing_blob_syncs_the_data_before_the_rename(
    local_store: LocalBlobStore, write: Callable[[bytes], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An existing name (a resend, or the leftover of a crash) is never linked over: the
    new data is fsynced first and then renamed over it, so the name never points at data
    that is not on disk."""
    local_store.put_file(KEY, write(b"previous"))
    source = write(DATA)
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            events.append("data fsync")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    local_store.put_file(KEY, source, move=True)

    assert events == ["data fsync", "rename"]
    assert (local_store.root / KEY).read_bytes() == DATA
    assert not source.exists()


def test_local_move_keeps_its_source_when_the_new_blob_cannot_be_synced(
    local_store: LocalBlobStore, write: Callable[[bytes], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write(DATA)

    def io_error(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", io_error)
    with pytest.raises(BlobStoreError, match="Input/output error"):
        local_store.put_file(KEY, source, move=True)
    monkeypatch.undo()
    assert source.read_bytes() == DATA  # the sender is not answered; it can be stored again
    local_store.put_file(KEY, source, move=True)
    assert (local_store.root / KEY).read_bytes() == DATA
    assert not source.exists()


@pytest.mark.parametrize("move", [False, True])
def test_local_disk_full_leaves_no_partial_blob(
    local_store: LocalBlobStore,
    write: Callable[[bytes], Path],
    monkeypatch: pytest.MonkeyPatch,
    move: bool,
) -> None:
    local_store.put_file(KEY, write(b"previous"))
    source = write(DATA)

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)

    with pytest.raises(BlobStoreError, match="disk is full") as excinfo:
        local_store.put_file(KEY, source, move=move)

    monkeypatch.undo()
    assert KEY in str(excinfo.value)
    assert local_store.read_range(KEY, 0, 100) == b"previous"  # the old blob is intact
    assert list((local_store.root / ".tmp").iterdir()) == []
    assert source.read_bytes() == DATA  # a failed move does not consume the source


def test_local_iter_blobs_skips_temp_files(
    local_store: LocalBlobStore, write: Callable[[bytes], Path]
) -> None:
    local_store.put_file(KEY, write(DATA))
    (local_store.root / ".tmp" / "put-crashed.part").write_bytes(b"partial")

    assert list(local_store.iter_blobs()) == [BlobInfo(key=KEY, size=len(DATA))]


def test_local_start_removes_only_stale_temp_files(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    LocalBlobStore(root)
    stale = root / ".tmp" / "put-stale.part"
    fresh = root / ".tmp" / "put-fresh.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    two_days_ago = time.time() - 2 * 86400
    os.utime(stale, (two_days_ago, two_days_ago))

    LocalBlobStore(root)

    assert not stale.exists()
    assert fresh.exists()  # may be a write in progress in another process


def test_local_check_fails_when_the_folder_is_unusable(local_store: LocalBlobStore) -> None:
    tmp_dir = local_store.root / ".tmp"
    tmp_dir.rmdir()
    tmp_dir.write_bytes(b"not a folder")

    with pytest.raises(BlobStoreError, match="could not write a probe file"):
        local_store.check()


def test_local_concurrent_puts_of_one_key(
    local_store: LocalBlobStore, write: Callable[[bytes], Path]
) -> None:
    sources = [write(DATA) for _ in range(8)]
    errors: list[BaseException] = []

    def put(source: Path) -> None:
        try:
            local_store.put_file(KEY, source, move=True)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert local_store.read_range(KEY, 0, 1000) == DATA
    assert list(local_store.iter_blobs()) == [BlobInfo(key=KEY, size=len(DATA))]


# -- S3 specifics -------------------------------------------------------------------------


def test_s3_keys_live_under_the_prefix(
    s3_endpoint: str, s3_admin: Any, write: Callable[[bytes], Path]
) -> None:
    bucket = _new_bucket(s3_admin)
    store = S3BlobStore(
        bucket, prefix="/one/two/", endpoint_url=s3_endpoint, region=REGION, **CREDENTIALS
    )
    store.put_file(KEY, write(DATA))
    client = s3_admin
    # A stray object outside the prefix belongs to someone else and is not listed.
    client.put_object(Bucket=bucket, Key="elsewhere.dcm", Body=b"x")

    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    head = client.head_object(Bucket=bucket, Key=f"one/two/{KEY}", ChecksumMode="ENABLED")

    assert sorted(keys) == ["elsewhere.dcm", f"one/two/{KEY}"]
    assert list(store.iter_blobs()) == [BlobInfo(key=KEY, size=len(DATA))]
    assert head["ChecksumSHA256"]  # the upload carried a SHA-256 that S3 verified


def test_s3_missing_bucket_fails_check_and_put(
    s3_endpoint: str, write: Callable[[bytes], Path]
) -> None:
    store = S3BlobStore(
        "cloudfilm-no-such-bucket", endpoint_url=s3_endpoint, region=REGION, **CREDENTIALS
    )

    with pytest.raises(BlobStoreError, match="does not exist"):
        store.check()
    with pytest.raises(BlobStoreError, match="NoSuchBucket"):
        store.put_file(KEY, write(DATA))


# -- factory ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("", "data/blobs"),
        ("  ", "data/blobs"),
        ("store", "data/store"),
        ("{tmp}/abs", "abs"),
        ("file://{tmp}/viaurl", "viaurl"),
        ("file://localhost{tmp}/host", "host"),
    ],
)
def test_factory_local(tmp_path: Path, url: str, expected: str) -> None:
    store = open_blob_store(url.format(tmp=tmp_path), data_dir=tmp_path / "data")

    assert isinstance(store, LocalBlobStore)
    assert store.root == tmp_path / expected


def test_factory_memory(tmp_path: Path) -> None:
    assert isinstance(open_blob_store("memory://", data_dir=tmp_path), MemoryBlobStore)


def test_factory_s3_passes_url_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake(bucket: str, **kwargs: Any) -> MemoryBlobStore:
        seen.update(kwargs, bucket=bucket)
        return MemoryBlobStore()

    monkeypatch.setattr(s3_module, "S3BlobStore", fake)

    open_blob_store(
        "s3://films/pacs/a?endpoint_url=http://127.0.0.1:9000&region=cn-north-1"
        "&access_key=AK&secret_key=S%2FK",
        data_dir=tmp_path,
    )

    assert seen == {
        "bucket": "films",
        "prefix": "/pacs/a",
        "endpoint_url": "http://127.0.0.1:9000",
        "region": "cn-north-1",
        "access_key": "AK",
        "secret_key": "S/K",
    }


def test_factory_s3_takes_credentials_from_the_environment(
    s3_endpoint: str,
    s3_admin: Any,
    tmp_path: Path,
    write: Callable[[bytes], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = _new_bucket(s3_admin)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env")
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    store = open_blob_store(
        f"s3://{bucket}/p?endpoint_url={s3_endpoint}&region={REGION}", data_dir=tmp_path
    )
    store.check()
    store.put_file(KEY, write(DATA))

    assert isinstance(store, S3BlobStore)
    assert store.read_range(KEY, 0, 3) == DATA[:3]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("gs://bucket/x", "unsupported scheme 'gs'"),
        ("s3:/bucket", "bucket right after s3://"),
        ("s3://user:pw@bucket", "bucket right after s3://"),
        ("s3://bucket?endpoint=http://x", "unknown s3 parameter"),
        ("s3://bucket?region=a&region=b", "given twice"),
        ("s3://bucket?access_key=AK", "both access_key and secret_key"),
        ("file://otherhost/x", "not host 'otherhost'"),
    ],
)
def test_factory_rejects_bad_urls(tmp_path: Path, url: str, problem: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        open_blob_store(url, data_dir=tmp_path)

    message = str(excinfo.value)
    assert message.startswith("CLOUDFILM_STORAGE_URL: ")
    assert problem in message
    assert "file:///" in message and "s3://bucket" in message  # the accepted forms


def test_factory_error_never_shows_the_secret(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as excinfo:
        open_blob_store("s3://bucket?access_key=AK&secret_key=TOPSECRET&typo=1", data_dir=tmp_path)

    assert "TOPSECRET" not in str(excinfo.value)


def test_stale_spool_files_in_sub_folders_are_removed(tmp_path: Path) -> None:
    import os
    import time

    from cloudfilm.infrastructure.storage.local import LocalBlobStore

    store = LocalBlobStore(tmp_path / "blobs")
    incoming = tmp_path / "blobs" / ".tmp" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    stale, fresh = incoming / "stow-old.part", incoming / "stow-new.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    old = time.time() - 3 * 86400
    os.utime(stale, (old, old))
    assert store.remove_stale_temp_files() == 1
    assert not stale.exists() and fresh.exists()
