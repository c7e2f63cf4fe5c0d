"""SigV4 query-string presigning that also signs chosen request headers.

The minio SDK presigns with `host` as the only signed header, so a presigned PUT would take a body of
any size and type. Here the signature also covers the headers given (`Content-Length`,
`Content-Type`): the store refuses a request whose headers differ from what was signed.
"""
from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

UNSIGNED = "UNSIGNED-PAYLOAD"


def _enc(value: str, safe: str = "-_.~") -> str:
    return quote(value, safe=safe)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def presign(method: str, base_url: str, path: str, *, access_key: str, secret_key: str, region: str,
            expires: int, headers: dict[str, str] | None = None, query: dict[str, str] | None = None,
            now: datetime | None = None) -> str:
    """A presigned URL for `method` on `base_url` + `path` (unencoded), signing `host` and `headers`."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/{region}/s3/aws4_request"
    host = urlsplit(base_url).netloc
    signed = {"host": host, **{k.lower(): " ".join(str(v).split()) for k, v in (headers or {}).items()}}
    names = sorted(signed)
    params = {**(query or {}), "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
              "X-Amz-Credential": f"{access_key}/{scope}", "X-Amz-Date": amz_date,
              "X-Amz-Expires": str(int(expires)), "X-Amz-SignedHeaders": ";".join(names)}
    canonical_query = "&".join(f"{_enc(k)}={_enc(v)}" for k, v in sorted(params.items()))
    canonical_path = _enc(path, safe="/-_.~")
    canonical = "\n".join([method, canonical_path, canonical_query,
                           "".join(f"{n}:{signed[n]}\n" for n in names), ";".join(names), UNSIGNED])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(("AWS4" + secret_key).encode(), day)
    for part in (region, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{base_url.rstrip('/')}{canonical_path}?{canonical_query}&X-Amz-Signature={signature}"
