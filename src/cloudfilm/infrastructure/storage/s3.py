"""Blobs in S3-compatible object storage (AWS, Ceph RGW, MinIO) via boto3.

One client per store, created in ``__init__``: boto3 clients are thread-safe (sessions are
not), so DIMSE association threads and the FastAPI threadpool share it and its connection
pool.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, cast

import boto3
import boto3.exceptions
import boto3.s3.transfer
import botocore.config
import botocore.exceptions

from cloudfilm.infrastructure.storage.base import BlobInfo, BlobNotFoundError, BlobStoreError
from cloudfilm.infrastructure.storage.local import validate_key

logger = logging.getLogger(__name__)

# ``open`` keeps blobs up to this size in memory and spills bigger ones to a temp file.
SPOOL_MAX_MEMORY = 8 << 20
COPY_BUFFER = 1 << 20
# FastAPI runs sync routes in a 40-thread pool and DIMSE adds a thread per association;
# botocore's default pool of 10 connections would make them queue for a socket.
MAX_POOL_CONNECTIONS = 64

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class S3BlobStore:
    """A :class:`~cloudfilm.infrastructure.storage.base.BlobStore` over one S3 bucket.

    Parameters
    ----------
    bucket : str
        The bucket; it must exist (``check`` reports when it does not).
    prefix : str
        Prepended to every key (``"cloudfilm/"``), so one bucket can hold several stores.
    endpoint_url : str or None
        For S3-compatible services (``http://127.0.0.1:9000`` for MinIO); None for AWS.
    region : str or None
        None: boto3's default (``AWS_DEFAULT_REGION``, the config file).
    access_key, secret_key : str or None
        None: boto3's default chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
        profiles, instance roles).
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 blob store needs a bucket name")
        self._bucket = bucket
        prefix = prefix.strip("/")
        self._prefix = f"{prefix}/" if prefix else ""
        self._endpoint_url = endpoint_url
        session = boto3.session.Session(
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
        )
        self._client: Any = session.client(
            "s3",
            endpoint_url=endpoint_url,
            config=botocore.config.Config(
                max_pool_connections=MAX_POOL_CONNECTIONS,
                # "standard" retries throttling and 5xx with backoff; the legacy default
                # does not retry every transient error S3 documents.
                retries={"mode": "standard", "max_attempts": 5},
            ),
        )
        # boto3's defaults: multipart above 8 MiB, 8 MiB parts, 10 threads per upload.
        self._transfer_config = boto3.s3.transfer.TransferConfig()

    def __repr__(self) -> str:
        where = f" at {self._endpoint_url}" if self._endpoint_url else ""
        return f"S3BlobStore('s3://{self._bucket}/{self._prefix}'{where})"

    def _object_key(self, key: str) -> str:
        return self._prefix + validate_key(key)

    def _raise(self, action: str, key: str | None, exc: Exception) -> NoReturn:
        """Re-raise a boto3/botocore error as a :class:`BlobStoreError` that names the key."""
        where = f"s3://{self._bucket}/{self._prefix}{key or ''}"
        if isinstance(exc, botocore.exceptions.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            message = err.get("Message") or code
            if key is not None and code in _NOT_FOUND_CODES:
                raise BlobNotFoundError(f"no blob stored under {key!r} ({where})") from exc
            raise BlobStoreError(f"could not {action} {where}: {code}: {message}") from exc
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            raise BlobStoreError(
                f"could not {action} {where}: no S3 credentials; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY or access_key/secret_key in CLOUDFILM_STORAGE_URL"
            ) from exc
        raise BlobStoreError(f"could not {action} {where}: {exc}") from exc

    # -- writing --------------------------------------------------------------------------

    def put_file(self, key: str, path: Path, *, move: bool = False) -> None:
        """Upload ``path``; return once S3 acknowledged it (multipart above 8 MiB).

        The upload carries a SHA-256 checksum per part, which S3 verifies before it
        acknowledges, so bytes corrupted on the way are refused rather than stored.
        """
        object_key = self._object_key(key)
        try:
            self._client.upload_file(
                str(path),
                self._bucket,
                object_key,
                ExtraArgs={"ChecksumAlgorithm": "SHA256"},
                Config=self._transfer_config,
            )
        except boto3.exceptions.S3UploadFailedError as exc:
            # upload_file flattens the ClientError into this; keep its text as the cause.
            where = f"s3://{self._bucket}/{object_key}"
            raise BlobStoreError(f"could not store {where}: {exc}") from exc
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            self._raise("store", key, exc)
        except OSError as exc:
            message = f"could not store blob {key!r}: cannot read {path}: {exc}"
            raise BlobStoreError(message) from exc
        if move:
            try:
                Path(path).unlink()
            except OSError as exc:
                logger.warning(
                    "cloudfilm.storage.source_not_removed",
                    extra={"path": str(path), "error": str(exc)},
                )

    # -- reading --------------------------------------------------------------------------

    def _get(self, key: str, **kwargs: str) -> Any:
        try:
            return self._client.get_object(Bucket=self._bucket, Key=self._object_key(key), **kwargs)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            self._raise("read", key, exc)

    def _head(self, key: str) -> Any:
        try:
            return self._client.head_object(Bucket=self._bucket, Key=self._object_key(key))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            self._raise("read", key, exc)

    def open(self, key: str) -> BinaryIO:
        """Download the blob into a seekable spool (memory up to 8 MiB, then a temp file)."""
        body = self._get(key)["Body"]
        # Not a with-block: the open spool is what we hand to the caller.
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_MEMORY)  # noqa: SIM115
        try:
            with body:
                shutil.copyfileobj(body, spool, COPY_BUFFER)
            spool.seek(0)
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            spool.close()
            self._raise("read", key, exc)
        except BaseException:
            spool.close()
            raise
        return cast(BinaryIO, spool)

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        # GET now, not on the first next(): a missing blob is reported before a streaming
        # response has sent its headers.
        body = self._get(key)["Body"]
        return self._stream(key, body, chunk_size)

    def _stream(self, key: str, body: Any, chunk_size: int) -> Iterator[bytes]:
        with body:
            try:
                yield from body.iter_chunks(chunk_size)
            except (botocore.exceptions.BotoCoreError, OSError) as exc:
                self._raise("read", key, exc)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"negative offset or length: {offset}, {length}")
        if length == 0:
            self._head(key)  # still report a missing blob
            return b""
        try:
            response = self._get(key, Range=f"bytes={offset}-{offset + length - 1}")
        except BlobStoreError as exc:
            cause = exc.__cause__
            if (
                isinstance(cause, botocore.exceptions.ClientError)
                and cause.response.get("Error", {}).get("Code") == "InvalidRange"
            ):
                return b""  # offset at or past the end: like a file read, no bytes
            raise
        try:
            with response["Body"] as body:
                return cast(bytes, body.read())
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            self._raise("read", key, exc)

    def local_path(self, key: str) -> Path | None:
        return None

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except BlobNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def modified_at(self, key: str) -> float:
        return float(self._head(key)["LastModified"].timestamp())

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self._bucket, Key=self._object_key(key))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            self._raise("delete", key, exc)

    def iter_blobs(self) -> Iterator[BlobInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self._bucket, Prefix=self._prefix):
                for obj in page.get("Contents", ()):
                    key = obj["Key"][len(self._prefix) :]
                    if key and not key.endswith("/"):  # skip "folder" marker objects
                        yield BlobInfo(key=key, size=int(obj["Size"]))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            self._raise("list", None, exc)

    def check(self) -> None:
        try:
            self._client.head_bucket(Bucket=self._bucket)
        except botocore.exceptions.ClientError as exc:
            # HEAD answers carry no error body, so the status code is all there is to go on.
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404:
                raise BlobStoreError(
                    f"S3 bucket {self._bucket!r} does not exist; create it or fix the bucket "
                    "in CLOUDFILM_STORAGE_URL"
                ) from exc
            if status == 403:
                raise BlobStoreError(
                    f"S3 bucket {self._bucket!r} refused access (403); check the credentials"
                ) from exc
            self._raise("reach bucket", None, exc)
        except botocore.exceptions.BotoCoreError as exc:
            self._raise("reach bucket", None, exc)
