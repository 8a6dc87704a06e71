"""Find, download and check the weight files the node loads.

A weight source in the config is a local path (``~`` and ``file://`` allowed)
or an http(s) URL. A URL is downloaded once into the cache dir
(``weights.cache_dir``; default ``$CLIPSAM_ROS_CACHE``, else ``~/.cache/clipsam_ros``) and reused after that
without touching the network. Downloads go to ``<name>.part-<pid>`` next to the
target and are moved into place with ``os.replace`` only once complete and
verified, so a crash, a dropped connection or a bad checksum never leaves a
file under the final name that a later start would trust.

Every problem raises `WeightError` with a one-line message that names the file
or URL, the config key and what to do about it.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from ..config import default_cache_dir
from ..errors import ClipsamError

log = logging.getLogger(__name__)

_SAM_BASE = "https://dl.fbaipublicfiles.com/segment_anything/"

SAM_URLS: dict[str, str] = {
    "vit_h": _SAM_BASE + "sam_vit_h_4b8939.pth",
    "vit_l": _SAM_BASE + "sam_vit_l_0b3195.pth",
    "vit_b": _SAM_BASE + "sam_vit_b_01ec64.pth",
}

# sha256 of the official SAM checkpoints, keyed by file name so that a local copy
# under the official name is checked too. Cross-checked against public code that
# pins them (e.g. computational-cell-analytics/micro-sam, micro_sam/util.py).
KNOWN_SHA256: dict[str, str] = {
    "sam_vit_h_4b8939.pth": "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
    "sam_vit_l_0b3195.pth": "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
    "sam_vit_b_01ec64.pth": "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
}

_CHUNK = 1 << 20
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_USER_AGENT = "clipsam_ros-weights/1"


class WeightError(ClipsamError, RuntimeError):
    """A weight file that cannot be used; str(exc) is ONE line naming the file, the config key and what to do."""


def sha256_of(path: Path, chunk: int = _CHUNK) -> str:
    """Hex sha256 of a file, read in chunks (checkpoints are GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_weight(
    source: str,
    *,
    key: str,
    sha256: str = "",
    cache_dir: str = "",
    progress: bool = True,
    timeout_s: float = 30.0,
) -> Path:
    """The local path of a verified weight file for `source` (path or http(s) URL).

    `key` is the config key `source` came from; it goes into every error message.
    `sha256` is the expected digest; "" falls back to KNOWN_SHA256 by file name.
    A URL whose digest is neither configured nor known is refused (nothing is
    downloaded or used unverified); a local file with none is the user's own and
    is used as is.
    """
    source = source.strip()
    if not source:
        raise WeightError(f"{key}: no weight file given; set {key} to {_what(key)} or an http(s) URL")
    parts = urllib.parse.urlsplit(source)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return _resolve_url(source, key=key, sha256=sha256, cache_dir=cache_dir,
                            progress=progress, timeout_s=timeout_s)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise WeightError(f"{key}: file URL {source} names a host; set {key} to a local path "
                              f"(file:///path/to/file) or an http(s) URL")
        path = Path(urllib.request.url2pathname(parts.path))
    elif scheme == "" or (os.name == "nt" and len(scheme) == 1):  # C:\... on Windows
        path = Path(source)
    else:
        raise WeightError(f"{key}: source {source} has unsupported scheme '{scheme}:'; "
                          f"set {key} to a local path or an http(s) URL")
    return _resolve_local(path.expanduser().absolute(), key=key, sha256=sha256)


def _what(key: str) -> str:
    return "a SAM .pth file" if key.startswith("sam.") else "a weight file"


def _short(digest: str) -> str:
    return digest[:12] + "..."


def _expected_sha256(sha256: str, name: str, key: str) -> str:
    """The digest to check against: the configured one, else the known one, else ""."""
    value = sha256.strip().lower()
    if value:
        if not _SHA256_RE.fullmatch(value):
            raise WeightError(f"{key}: expected sha256 {sha256!r} for {name} is not 64 hex digits; "
                              f"fix {key}_sha256 or leave it empty")
        return value
    return KNOWN_SHA256.get(name, "")


def _hash(path: Path, key: str) -> str:
    try:
        return sha256_of(path)
    except OSError as exc:
        raise WeightError(f"{key}: cannot read {path} ({exc.strerror or exc}); "
                          f"check the file and its permissions") from None


def _resolve_local(path: Path, *, key: str, sha256: str) -> Path:
    hint = f"set {key} to {_what(key)} or a URL"
    if not path.exists():
        raise WeightError(f"{key}: file {path} does not exist; {hint}")
    if not path.is_file():
        raise WeightError(f"{key}: {path} is not a regular file; {hint}")
    if not os.access(path, os.R_OK):
        raise WeightError(f"{key}: file {path} is not readable; fix its permissions or {hint}")
    expected = _expected_sha256(sha256, path.name, key)
    if expected:
        actual = _hash(path, key)
        if actual != expected:
            fix = f" or fix {key}_sha256" if sha256.strip() else ""
            raise WeightError(f"{key}: file {path} checksum mismatch: expected {_short(expected)}, "
                              f"got {_short(actual)}; delete or replace the file{fix}")
    return path


def _resolve_url(url: str, *, key: str, sha256: str, cache_dir: str,
                 progress: bool, timeout_s: float) -> Path:
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    if not name:
        raise WeightError(f"{key}: URL {url} does not end in a file name; set {key} to the URL of a weight file")
    expected = _expected_sha256(sha256, name, key)
    if not expected:
        raise WeightError(f"{key}: no sha256 is known for {url}, and downloads are always verified; "
                          f"set {key}_sha256 to the file's sha256 (sha256sum FILE), "
                          f"or set {key} to a local file")
    cache = default_cache_dir(cache_dir)
    target = cache / name

    if target.is_file():
        if _hash(target, key) == expected:
            return target
        # a stale or foreign file under the official name: fetch a good copy over it
        log.warning("%s: cached %s does not match its sha256; downloading %s again", key, target, url)

    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightError(f"{key}: cannot create cache dir {cache} for {url} ({exc.strerror or exc}); "
                          f"set weights.cache_dir to a writable folder") from None

    tmp = cache / f"{name}.part-{os.getpid()}"
    try:
        _download(url, tmp, target, key=key, expected=expected, progress=progress, timeout_s=timeout_s)
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise WeightError(f"{key}: cannot move the download of {url} to {target} "
                              f"({exc.strerror or exc}); check weights.cache_dir") from None
    finally:
        # still there only when something failed (including Ctrl-C): never keep a partial file
        with contextlib.suppress(OSError):
            tmp.unlink()
    return target


def _network_reason(exc: BaseException, timeout_s: float) -> str:
    """A short human phrase for a connection-level failure."""
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, socket.gaierror):
        return "host name not found"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _download(url: str, tmp: Path, target: Path, *, key: str, expected: str,
              progress: bool, timeout_s: float) -> None:
    """Stream `url` into `tmp`, hashing on the way; raise WeightError unless it is complete and matches."""
    by_hand = f"check the network or download it by hand to {target}"
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    # a fresh opener per call so proxy settings are read from the environment now
    opener = urllib.request.build_opener()
    log.info("%s: downloading %s to %s", key, url, target)
    try:
        response = opener.open(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise WeightError(f"{key}: download of {url} failed: HTTP {exc.code} {exc.reason}; "
                          f"check the URL in {key} or download it by hand to {target}") from None
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
        raise WeightError(f"{key}: download of {url} failed: {_network_reason(exc, timeout_s)}; "
                          f"{by_hand}") from None

    with response:
        length = response.headers.get("Content-Length", "")
        total = int(length) if length.strip().isdigit() else None
        digest = hashlib.sha256()
        received = 0
        try:
            with open(tmp, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                                              desc=target.name, disable=not progress) as bar:
                while True:
                    try:
                        block = response.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        so_far = _so_far(received, total)
                        if isinstance(exc, (TimeoutError, socket.timeout)):
                            raise WeightError(f"{key}: download of {url} stalled for {timeout_s:g} s "
                                              f"{so_far}; {by_hand}") from None
                        raise WeightError(f"{key}: download of {url} failed: transfer interrupted "
                                          f"{so_far} ({_network_reason(exc, timeout_s)}); {by_hand}") from None
                    if not block:
                        break
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
                out.flush()
                # the rename must not be able to publish data still in the page cache
                os.fsync(out.fileno())
        except OSError as exc:  # local write failure: disk full, permissions
            raise WeightError(f"{key}: cannot write {tmp} while downloading {url} ({exc.strerror or exc}); "
                              f"free disk space or set weights.cache_dir to a writable folder") from None

    # http.client returns EOF quietly on a short body, so the length check is ours
    if total is not None and received != total:
        raise WeightError(f"{key}: download of {url} failed: transfer interrupted "
                          f"{_so_far(received, total)}; {by_hand}")
    if received == 0:
        raise WeightError(f"{key}: download of {url} failed: the server sent an empty file; {by_hand}")
    if expected:
        actual = digest.hexdigest()
        if actual != expected:
            raise WeightError(f"{key}: download of {url} failed: checksum mismatch: expected "
                              f"{_short(expected)}, got {_short(actual)}; check the URL in {key} "
                              f"and the expected sha256, or download it by hand to {target}")


def _so_far(received: int, total: int | None) -> str:
    return f"after {received} of {total} bytes" if total is not None else f"after {received} bytes"
