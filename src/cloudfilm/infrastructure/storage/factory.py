"""Pick and build the blob store named by the ``CLOUDFILM_STORAGE_URL`` setting."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from cloudfilm.infrastructure.storage.base import BlobStore
from cloudfilm.infrastructure.storage.local import LocalBlobStore
from cloudfilm.infrastructure.storage.memory import MemoryBlobStore

ACCEPTED_FORMS = (
    "a folder path (/var/lib/cloudfilm/blobs, or relative to the data folder), "
    "file:///absolute/path, "
    "s3://bucket/optional/prefix?endpoint_url=http://127.0.0.1:9000&region=us-east-1 "
    "(credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
    "access_key=...&secret_key=... parameters), "
    "memory:// (tests only: blobs vanish at exit)"
)
_S3_PARAMS = frozenset({"endpoint_url", "region", "access_key", "secret_key"})


def _invalid(problem: str) -> ValueError:
    return ValueError(f"CLOUDFILM_STORAGE_URL: {problem}; accepted forms: {ACCEPTED_FORMS}")


def open_blob_store(url: str, *, data_dir: Path) -> BlobStore:
    """Build the blob store that ``url`` names.

    Parameters
    ----------
    url : str
        The ``CLOUDFILM_STORAGE_URL`` value; see ``ACCEPTED_FORMS``. An empty value means
        ``<data_dir>/blobs``.
    data_dir : Path
        Base for relative folder paths.

    Returns
    -------
    BlobStore
        A :class:`LocalBlobStore`, :class:`S3BlobStore` or :class:`MemoryBlobStore`.

    Raises
    ------
    ValueError
        The URL is malformed or its scheme unknown; the message names the setting and lists
        the accepted forms. Never contains a secret from the URL.
    BlobStoreError
        A local folder cannot be created.
    """
    url = url.strip()
    if not url:
        return LocalBlobStore(data_dir / "blobs")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    # One-letter "schemes" are Windows drive letters; a typo such as "s3:/bucket" still has
    # a scheme and is refused below rather than becoming a folder named "s3:".
    if len(scheme) <= 1:
        path = Path(url).expanduser()
        return LocalBlobStore(path if path.is_absolute() else data_dir / path)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise _invalid(f"file URLs name a local folder, not host {parts.netloc!r}")
        if not parts.path:
            raise _invalid("the file URL has no path")
        return LocalBlobStore(Path(unquote(parts.path)))
    if scheme == "memory":
        return MemoryBlobStore()
    if scheme == "s3":
        return _s3(url)
    raise _invalid(f"unsupported scheme {scheme!r}")


def _s3(url: str) -> BlobStore:
    # Imported on demand so that a deployment on local disk never loads boto3.
    from cloudfilm.infrastructure.storage.s3 import S3BlobStore

    parts = urlsplit(url)
    # No user:password@ or :port here: credentials and endpoint go in the query string.
    if not parts.netloc or any(c in parts.netloc for c in "@:"):
        raise _invalid("an s3 URL is s3://bucket/prefix with the bucket right after s3://")
    bucket = parts.netloc
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise _invalid("the s3 URL's query string is malformed") from None
    unknown = sorted(set(query) - _S3_PARAMS)
    if unknown:
        raise _invalid(f"unknown s3 parameter(s) {', '.join(unknown)}")
    repeated = sorted(name for name, values in query.items() if len(values) > 1)
    if repeated:
        raise _invalid(f"s3 parameter(s) given twice: {', '.join(repeated)}")
    params = {name: values[0] or None for name, values in query.items()}
    if (params.get("access_key") is None) != (params.get("secret_key") is None):
        raise _invalid("give both access_key and secret_key, or neither")
    return S3BlobStore(
        bucket,
        prefix=unquote(parts.path),
        endpoint_url=params.get("endpoint_url"),
        region=params.get("region"),
        access_key=params.get("access_key"),
        secret_key=params.get("secret_key"),
    )
