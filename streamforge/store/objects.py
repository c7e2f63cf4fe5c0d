"""The object store: S3 (MinIO, SeaweedFS, AWS) through the minio SDK.

Every SDK or network failure leaves this module as a `StorageError` naming the operation and
the key. Two clients are kept: one for the endpoint the app reaches, and one built on the
public URL and used only to presign, because a SigV4 signature covers the Host header and must
therefore be made for the host the browser or player will use.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import mimetypes
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit
from xml.sax.saxutils import escape

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.datatypes import Part, PostPolicy
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error
from urllib3.util import Retry, Timeout

from streamforge.errors import ConfigError, StorageError
from streamforge.instruments import STORE_ERRORS
from streamforge.store.presign import presign

if TYPE_CHECKING:
    from streamforge.config import Config

log = logging.getLogger(__name__)

# Content types of what the pipeline writes; anything else falls back to `mimetypes`.
CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".m4a": "audio/mp4",
    ".ts": "video/mp2t",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".png": "image/png",
    ".vtt": "text/vtt",
    ".json": "application/json",
}

_MISSING_CODES = {"NoSuchKey", "NotFound", "NoSuchObject", "ResourceNotFound"}


def content_type_for(path: str | os.PathLike) -> str:
    """The Content-Type to store a file under, from its extension."""
    suffix = Path(path).suffix.lower()
    if suffix in CONTENT_TYPES:
        return CONTENT_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(str(path))
    return guessed or "application/octet-stream"


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD (or a listing) says about one object."""

    key: str
    size: int
    etag: str
    content_type: str | None
    last_modified: datetime | None
    cache_control: str | None = None


def _http_client(connect: float, read: float, retries: int) -> urllib3.PoolManager:
    """A pool with short timeouts so a dead or hung store fails in seconds, not minutes."""
    return urllib3.PoolManager(
        timeout=Timeout(connect=connect, read=read),
        maxsize=32,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=Retry(total=retries, connect=retries, read=0, redirect=0, status=retries,
                      backoff_factor=0.2, status_forcelist=[500, 502, 503, 504],
                      allowed_methods=None, raise_on_status=False),
    )


def _split_url(url: str) -> tuple[str, bool]:
    """`http(s)://host:port` -> (`host:port`, secure); a path is refused (minio cannot use one)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.path not in ("", "/"):
        raise StorageError(f"object store URL {url!r} must not have a path")
    if not parts.netloc:
        raise StorageError(f"object store URL {url!r} has no host")
    return parts.netloc, parts.scheme == "https"


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class ObjectStore:
    """One bucket of an S3 store, with presigning for browsers and players."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, bucket: str, *,
                 region: str = "us-east-1", secure: bool = False, public_url: str = "",
                 cdn_base_url: str = "", connect_timeout: float = 2.0, read_timeout: float = 60.0,
                 retries: int = 2) -> None:
        self._settings = dict(endpoint=endpoint, access_key=access_key, secret_key=secret_key, bucket=bucket,
                              region=region, secure=secure, public_url=public_url, cdn_base_url=cdn_base_url)
        self.endpoint = endpoint
        self.bucket = bucket
        self.region = region
        self.secure = secure
        scheme = "https" if secure else "http"
        self.public_base = (public_url or f"{scheme}://{endpoint}").rstrip("/")
        self.cdn_base_url = cdn_base_url.rstrip("/")
        self._client = Minio(endpoint=endpoint, access_key=access_key, secret_key=secret_key,
                             secure=secure, region=region,
                             http_client=_http_client(connect_timeout, read_timeout, retries))
        # A separate pool for health checks: one try, answer within a couple of seconds.
        self._ping_client = Minio(endpoint=endpoint, access_key=access_key, secret_key=secret_key,
                                  secure=secure, region=region,
                                  http_client=_http_client(min(connect_timeout, 1.5), 2.0, 0))
        self._keys = (access_key, secret_key)  # for presigned URLs that sign more than `host` (store.presign)
        public_host, public_secure = _split_url(self.public_base)
        # Only used to sign: the region is given so that presigning never makes a request.
        self._signer = Minio(endpoint=public_host, access_key=access_key, secret_key=secret_key,
                             secure=public_secure, region=region)

    @classmethod
    def from_config(cls, config: Config) -> ObjectStore:
        """Build the store on `[storage] endpoint` (for either mode use `streamforge.store.connect`)."""
        st = config.storage
        if not st.endpoint:
            raise ConfigError("[storage] endpoint is empty: the embedded store's ObjectStore comes from "
                              "streamforge.store.connect.object_store(config)")
        endpoint = st.endpoint
        if "://" in endpoint:
            endpoint, secure = _split_url(endpoint)
        else:
            secure = st.secure
        public_url = st.public_url or f"{'https' if secure else 'http'}://{endpoint}"
        return cls(endpoint=endpoint, access_key=st.access_key, secret_key=st.secret_key,
                   bucket=st.bucket, region=st.region, secure=secure, public_url=public_url,
                   cdn_base_url=config.cdn.base_url)

    # -- errors -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, op: str, key: str = "") -> Iterator[None]:
        """Turn whatever the SDK or the network raises into a StorageError naming op and key."""
        where = f"{op} {self.bucket}/{key}" if key else f"{op} {self.bucket}"
        try:
            with self._translated(where):
                yield
        except StorageError:
            STORE_ERRORS.labels(op).inc()  # GET /metrics: streamforge_store_errors_total{op}
            raise

    @contextlib.contextmanager
    def _translated(self, where: str) -> Iterator[None]:
        """The SDK's and the network's exceptions as StorageError."""
        try:
            yield
        except S3Error as e:
            err = StorageError(f"{where}: {e.code}: {e.message}")
            err.s3_code = e.code
            raise err from e
        except MinioException as e:
            raise StorageError(f"{where}: {e}") from e
        except urllib3.exceptions.HTTPError as e:
            reason = getattr(e, "reason", None) or e
            raise StorageError(f"{where}: object store at {self.endpoint} unreachable: {reason}") from e
        except (OSError, ValueError) as e:
            raise StorageError(f"{where}: {e}") from e

    # -- bucket -----------------------------------------------------------------------------

    def ping(self) -> None:
        """Raise StorageError unless the store answers and the bucket exists (within ~2 s)."""
        with self._errors("ping"):
            if not self._ping_client.bucket_exists(bucket_name=self.bucket):
                raise StorageError(f"ping {self.bucket}: bucket does not exist")

    def bucket_exists(self) -> bool:
        """True when the bucket exists."""
        with self._errors("bucket_exists"):
            return self._client.bucket_exists(bucket_name=self.bucket)

    def ensure_bucket(self, cors_origins: Iterable[str] = ()) -> None:
        """Create the bucket if missing and, given origins, let browsers there PUT and GET."""
        with self._errors("make_bucket"):
            if not self._client.bucket_exists(bucket_name=self.bucket):
                try:
                    self._client.make_bucket(bucket_name=self.bucket)
                except S3Error as e:
                    if e.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
        origins = [o.rstrip("/") for o in cors_origins if o]
        if origins:
            self.set_cors(origins)

    def set_cors(self, origins: list[str]) -> None:
        """PutBucketCors: the app's origins may PUT/POST/GET (ETag exposed); anyone may GET."""
        # minio-py 7.2 has no set_bucket_cors, so the XML goes through its signed request path.
        def rule(allowed: list[str], methods: list[str]) -> str:
            return ("<CORSRule>"
                    + "".join(f"<AllowedOrigin>{escape(o)}</AllowedOrigin>" for o in allowed)
                    + "".join(f"<AllowedMethod>{m}</AllowedMethod>" for m in methods)
                    + "<AllowedHeader>*</AllowedHeader>"
                    + "".join(f"<ExposeHeader>{h}</ExposeHeader>"
                              for h in ("ETag", "Content-Length", "Content-Range", "Accept-Ranges"))
                    + "<MaxAgeSeconds>3600</MaxAgeSeconds></CORSRule>")
        rules = rule(origins, ["GET", "HEAD", "PUT", "POST"])
        if "*" not in origins:
            rules += rule(["*"], ["GET", "HEAD"])
        body = f'<CORSConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{rules}</CORSConfiguration>'
        data = body.encode()
        headers = {"Content-Type": "application/xml",
                   "Content-MD5": base64.b64encode(hashlib.md5(data).digest()).decode()}
        with self._errors("set_cors"):
            try:
                self._client._execute("PUT", bucket_name=self.bucket, body=data, headers=headers,
                                      query_params={"cors": ""})
            except S3Error as e:
                # MinIO's community server has no per-bucket CORS: its CORS is server-wide
                # (MINIO_API_CORS_ALLOW_ORIGIN, "*" by default), so browsers are already allowed.
                if e.code == "AccessDenied":  # a least-privilege key (docs/stores.md): the operator sets CORS
                    log.warning("not allowed to set the bucket's CORS (s3:PutBucketCORS); browsers need it "
                                "for uploads: set it as docs/stores.md says")
                    return
                if e.code not in ("NotImplemented", "NotImplementedError"):
                    raise
                log.warning("the store has no per-bucket CORS (%s); relying on its server-wide CORS", e.code)

    def get_cors(self) -> str | None:
        """The bucket's CORS configuration XML, or None when it has none."""
        with self._errors("get_cors"):
            try:
                resp = self._client._execute("GET", bucket_name=self.bucket, query_params={"cors": ""})
            except S3Error as e:
                if e.code in ("NoSuchCORSConfiguration", "NoSuchCorsConfiguration"):
                    return None
                raise
            return resp.data.decode()

    def clear_public_read(self) -> None:
        """Remove the bucket policy: nothing is readable without a signature."""
        with self._errors("delete_bucket_policy"):
            try:
                self._client.delete_bucket_policy(bucket_name=self.bucket)
            except S3Error as e:
                if e.code == "AccessDenied":  # a least-privilege key may not touch policies: the operator's job
                    log.warning("not allowed to remove the bucket policy (s3:DeleteBucketPolicy): make sure it "
                                "grants no anonymous read (`mc anonymous set none`, S3 Block Public Access)")
                    return
                if e.code not in ("NoSuchBucketPolicy", "NoSuchPolicy"):
                    raise

    def prepare(self, cors_origins: Iterable[str]) -> None:
        """Create the bucket with CORS and remove any bucket policy: nothing is readable without a signature.

        A CDN fetches public videos' outputs from the app (`/processed/...`, which checks the video's
        visibility on every request), never from the store: an open prefix would serve private and
        unlisted videos too, and keep serving a video made private (docs/stores.md, "Behind a CDN")."""
        self.ensure_bucket(cors_origins)
        self.clear_public_read()

    # -- presigning -------------------------------------------------------------------------

    def _presign(self, method: str, key: str, expires: int, headers: dict[str, str],
                 query: dict[str, str] | None = None) -> str:
        """A presigned URL on the public host whose signature also covers `headers`."""
        if not 1 <= expires <= 7 * 24 * 3600:
            raise StorageError(f"presign {self.bucket}/{key}: expires must be 1 s to 7 days, not {expires}")
        return presign(method, self.public_base, f"/{self.bucket}/{key}", access_key=self._keys[0],
                       secret_key=self._keys[1], region=self.region, expires=expires, headers=headers, query=query)

    def presign_put(self, key: str, content_type: str, expires: int, size: int | None = None) -> dict:
        """A presigned PUT for a browser: {method, url, headers, expires_at}; send exactly `headers`.

        The signature covers Content-Type and, given `size`, Content-Length (the store takes exactly
        that many bytes) and `If-None-Match: *` (it only creates the object: once it exists the URL
        cannot overwrite it)."""
        headers = {"Content-Type": content_type}
        if size is not None:
            headers.update({"Content-Length": str(int(size)), "If-None-Match": "*"})
        url = self._presign("PUT", key, expires, headers)
        return {"method": "PUT", "url": url, "headers": headers,
                "expires_at": _iso(datetime.now(UTC) + timedelta(seconds=expires))}

    def presign_post(self, key: str, max_size: int, content_type: str, expires: int) -> dict:
        """A browser form upload: {url, fields, expires_at}; the store refuses bodies over max_size."""
        expires_at = datetime.now(UTC) + timedelta(seconds=expires)
        policy = PostPolicy(bucket_name=self.bucket, expiration=expires_at)
        policy.add_equals_condition(element="key", value=key)
        policy.add_equals_condition(element="Content-Type", value=content_type)
        policy.add_content_length_range_condition(lower_limit=1, upper_limit=max_size)
        with self._errors("presign_post", key):
            fields = self._signer.presigned_post_policy(policy=policy)
        fields = {"key": key, "Content-Type": content_type, **fields}
        return {"method": "POST", "url": f"{self.public_base}/{self.bucket}", "fields": fields,
                "expires_at": _iso(expires_at)}

    def presigned_get(self, key: str, expires: int, download_name: str | None = None) -> str:
        """A presigned GET URL on the public host; with `download_name`, served as an attachment of that name."""
        headers = None
        if download_name:
            ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in download_name)
            headers = {"response-content-disposition": f"attachment; filename=\"{ascii_name}\"; "
                                                       f"filename*=UTF-8''{quote(download_name, safe='')}"}
        with self._errors("presigned_get", key):
            return self._signer.presigned_get_object(bucket_name=self.bucket, object_name=key,
                                                     expires=timedelta(seconds=expires), response_headers=headers)

    def public_url(self, key: str) -> str:
        """The unsigned URL players fetch `key` from: on the CDN when set, else the store's public URL."""
        quoted = quote(key, safe="/~")
        if self.cdn_base_url:
            return f"{self.cdn_base_url}/{quoted}"
        return f"{self.public_base}/{self.bucket}/{quoted}"

    # -- multipart --------------------------------------------------------------------------

    def create_multipart(self, key: str, content_type: str) -> str:
        """Start a multipart upload and return its upload id."""
        with self._errors("create_multipart", key):
            return self._client._create_multipart_upload(
                bucket_name=self.bucket, object_name=key, headers={"Content-Type": content_type})

    def presign_part(self, key: str, upload_id: str, part_number: int, expires: int, size: int | None = None) -> str:
        """A presigned PUT URL for one part (1..10000) of a multipart upload; given `size`, for exactly
        that many bytes (the signature covers Content-Length)."""
        if not 1 <= part_number <= 10000:
            raise StorageError(f"presign_part {self.bucket}/{key}: part number {part_number} "
                               "outside 1..10000")
        headers = {} if size is None else {"Content-Length": str(int(size))}
        return self._presign("PUT", key, expires, headers, {"partNumber": str(part_number), "uploadId": upload_id})

    def complete_multipart(self, key: str, upload_id: str, parts: Iterable[tuple[int, str]]) -> str:
        """Assemble the uploaded parts (part_number, etag) into the object; return its ETag."""
        ordered = sorted((int(n), str(etag).strip().strip('"')) for n, etag in parts)
        with self._errors("complete_multipart", key):
            result = self._client._complete_multipart_upload(
                bucket_name=self.bucket, object_name=key, upload_id=upload_id,
                parts=[Part(part_number=n, etag=etag) for n, etag in ordered])
        return (result.etag or "").strip('"')

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload; an upload that is already gone is not an error."""
        with self._errors("abort_multipart", key):
            try:
                self._client._abort_multipart_upload(bucket_name=self.bucket, object_name=key,
                                                     upload_id=upload_id)
            except S3Error as e:
                if e.code != "NoSuchUpload":
                    raise

    def list_parts(self, key: str, upload_id: str) -> list[dict]:
        """The parts uploaded so far: [{part_number, etag, size}], so a browser can resume."""
        out: list[dict] = []
        marker: str | None = None
        with self._errors("list_parts", key):
            while True:
                result = self._client._list_parts(bucket_name=self.bucket, object_name=key,
                                                  upload_id=upload_id, max_parts=1000,
                                                  part_number_marker=marker)
                out.extend({"part_number": p.part_number, "etag": (p.etag or "").strip('"'),
                            "size": p.size} for p in result.parts)
                if not result.is_truncated or not result.next_part_number_marker:
                    break
                marker = str(result.next_part_number_marker)
        return out

    # -- objects ----------------------------------------------------------------------------

    def _head(self, key: str):
        """The SDK's HEAD answer for `key`, or None when there is no such object."""
        with self._errors("stat", key):
            try:
                return self._client.stat_object(bucket_name=self.bucket, object_name=key)
            except S3Error as e:
                if e.code in _MISSING_CODES:
                    return None
                raise

    def stat(self, key: str) -> ObjectInfo | None:
        """HEAD `key`: its size, ETag, type and date, or None when there is no such object."""
        obj = self._head(key)
        if obj is None:
            return None
        headers = obj.metadata or {}
        return ObjectInfo(key=key, size=obj.size or 0, etag=(obj.etag or "").strip('"'),
                          content_type=obj.content_type, last_modified=obj.last_modified,
                          cache_control=headers.get("Cache-Control"))

    def exists(self, key: str) -> bool:
        """True when `key` exists."""
        return self.stat(key) is not None

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object under `prefix` (recursively), in key order."""
        with self._errors("list", prefix):
            return [ObjectInfo(key=o.object_name, size=o.size or 0, etag=(o.etag or "").strip('"'),
                               content_type=o.content_type, last_modified=o.last_modified)
                    for o in self._client.list_objects(bucket_name=self.bucket, prefix=prefix,
                                                       recursive=True)
                    if not o.is_dir]

    def download(self, key: str, path: str | os.PathLike, chunk: int = 1024 * 1024) -> int:
        """Stream `key` into the file `path` (written beside it, then renamed); return its size."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        size = 0
        done = False
        try:
            with os.fdopen(fd, "wb") as f, self._errors("download", key):
                response = self._client.get_object(bucket_name=self.bucket, object_name=key)
                try:
                    for data in response.stream(amt=chunk):
                        f.write(data)
                        size += len(data)
                finally:
                    response.close()
                    response.release_conn()
            os.replace(tmp, path)
            done = True
        finally:
            if not done:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        return size

    def upload_file(self, key: str, path: str | os.PathLike, content_type: str | None = None,
                    cache_control: str | None = None) -> str:
        """Upload a local file to `key` (type from the extension unless given); return its ETag."""
        metadata = {"Cache-Control": cache_control} if cache_control else None
        with self._errors("upload_file", key):
            result = self._client.fput_object(
                bucket_name=self.bucket, object_name=key, file_path=str(path),
                content_type=content_type or content_type_for(path), metadata=metadata)
        return (result.etag or "").strip('"')

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None,
                  cache_control: str | None = None) -> str:
        """Store a small object from memory; return its ETag."""
        metadata = {"Cache-Control": cache_control} if cache_control else None
        with self._errors("put_bytes", key):
            result = self._client.put_object(
                bucket_name=self.bucket, object_name=key, data=io.BytesIO(data), length=len(data),
                content_type=content_type or content_type_for(key), metadata=metadata)
        return (result.etag or "").strip('"')

    def get_bytes(self, key: str) -> bytes:
        """Read a small object into memory."""
        with self._errors("get_bytes", key):
            response = self._client.get_object(bucket_name=self.bucket, object_name=key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def open_stream(self, key: str, chunk: int = 256 * 1024) -> tuple[ObjectInfo, Iterator[bytes]] | None:
        """(info, chunks) to stream an object out, or None when it does not exist."""
        info = self.stat(key)
        if info is None:
            return None
        with self._errors("get_object", key):
            response = self._client.get_object(bucket_name=self.bucket, object_name=key)

        def chunks() -> Iterator[bytes]:
            try:
                yield from response.stream(chunk)
            finally:
                response.close()
                response.release_conn()
        return info, chunks()

    def upload_tree(self, prefix: str, local_dir: str | os.PathLike,
                    cache_control: Callable[[str], str | None] | None = None, workers: int = 8) -> int:
        """Upload every file under `local_dir` to `prefix/<relpath>` in parallel; return the count."""
        root = Path(local_dir)
        if not root.is_dir():
            raise StorageError(f"upload_tree {self.bucket}/{prefix}: {root} is not a directory")
        files = sorted(p for p in root.rglob("*") if p.is_file())
        base = prefix.rstrip("/") + "/" if prefix else ""
        failed = threading.Event()

        def send(path: Path) -> None:
            if failed.is_set():
                return
            rel = path.relative_to(root).as_posix()
            ok = False
            try:
                self.upload_file(base + rel, path, cache_control=cache_control(rel) if cache_control else None)
                ok = True
            finally:
                if not ok:
                    failed.set()  # the other workers skip what they have not started

        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="upload") as pool:
            for future in [pool.submit(send, p) for p in files]:
                future.result()
        return len(files)

    def copy(self, src: str, dst: str) -> None:
        """Server-side copy of an object up to 5 GiB within the bucket."""
        with self._errors("copy", f"{src} -> {dst}"):
            self._client.copy_object(bucket_name=self.bucket, object_name=dst,
                                     source=CopySource(bucket_name=self.bucket, object_name=src))

    def delete(self, key: str) -> None:
        """Delete one object; a missing one is not an error."""
        with self._errors("delete", key):
            try:
                self._client.remove_object(bucket_name=self.bucket, object_name=key)
            except S3Error as e:
                if e.code not in _MISSING_CODES:
                    raise

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix`; return how many there were."""
        if not prefix:
            raise StorageError(f"delete_prefix {self.bucket}: refusing to delete with an empty prefix")
        keys = [o.key for o in self.list(prefix)]
        with self._errors("delete_prefix", prefix):
            for start in range(0, len(keys), 1000):
                batch = [DeleteObject(name=k) for k in keys[start:start + 1000]]
                errors = list(self._client.remove_objects(bucket_name=self.bucket,
                                                          delete_object_list=batch))
                bad = [e for e in errors if e.code not in _MISSING_CODES]
                if bad:
                    raise StorageError(f"delete_prefix {self.bucket}/{prefix}: {len(bad)} objects "
                                       f"not deleted, first {bad[0].name}: {bad[0].code} {bad[0].message}")
        return len(keys)

    # -- whole-bucket copies (migrate, backup, restore: store/transfer.py) ----------------------

    def patient(self) -> ObjectStore:
        """The same store with timeouts for bulk copies: urllib3 sends a request body under the connect
        timeout, and a 16 MiB part to a store busy with eight of them takes longer than 2 s."""
        return ObjectStore(**self._settings, connect_timeout=30.0, read_timeout=300.0)

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator:
        """A streaming GET of `key`: a file-like object with `read(n)`, released at the end."""
        with self._errors("get", key):
            response = self._client.get_object(bucket_name=self.bucket, object_name=key)
        try:
            yield response
        finally:
            response.close()
            response.release_conn()

    def put_stream(self, key: str, stream, length: int, content_type: str, *, part_size: int,
                   metadata: dict | None = None) -> str:
        """Upload `length` bytes read from `stream` (one PUT up to `part_size`, else parts of that size)."""
        with self._errors("put_stream", key):
            result = self._client.put_object(bucket_name=self.bucket, object_name=key, data=stream, length=length,
                                             content_type=content_type, metadata=metadata, part_size=part_size)
        return (result.etag or "").strip('"')

    def user_metadata(self, key: str) -> dict[str, str] | None:
        """The `x-amz-meta-*` headers of `key` (names lower-case, prefix removed), or None when it is missing."""
        obj = self._head(key)
        if obj is None:
            return None
        prefix = "x-amz-meta-"
        return {k.lower()[len(prefix):]: v for k, v in (obj.metadata or {}).items() if k.lower().startswith(prefix)}
