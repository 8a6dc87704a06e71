"""Weight resolution against a real HTTP server on 127.0.0.1 (no other address is contacted)."""
from __future__ import annotations

import hashlib
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from clipsam_ros.models import weights
from clipsam_ros.models.weights import (
    KNOWN_SHA256,
    SAM_URLS,
    WeightError,
    default_cache_dir,
    resolve_weight,
    sha256_of,
)

KEY = "sam.checkpoint"
# a few MB, not a multiple of the download chunk, so the last read is partial
DATA = os.urandom(3 * (1 << 20) + 12345)
DATA_SHA = hashlib.sha256(DATA).hexdigest()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.paths: list[str] = []
        self.lock = threading.Lock()
        self.release = threading.Event()   # set at teardown to free stalled handlers

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        pass  # clients hanging up mid-body are expected here


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def _head(self, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        with self.server.lock:
            self.server.paths.append(self.path)
        route = self.path.split("/")[1]
        if route == "data":
            self._head(len(DATA))
            self.wfile.write(DATA)
        elif route == "short":
            # promise the full size, send a third, then close the connection
            self._head(len(DATA))
            self.wfile.write(DATA[: len(DATA) // 3])
            self.wfile.flush()
            self.close_connection = True
        elif route == "stall_body":
            self._head(len(DATA))
            self.wfile.write(DATA[: 1 << 20])
            self.wfile.flush()
            self.server.release.wait(10)
        elif route == "stall_head":
            self.server.release.wait(10)
        else:
            self.send_error(404)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # a proxy from the environment would send 127.0.0.1 requests elsewhere
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _one_line_with_key(exc: pytest.ExceptionInfo[WeightError], key: str = KEY) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "\r" not in msg
    assert key in msg
    return msg


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- downloads -------------------------------------------------------------------------------

def test_download_lands_atomically_with_right_bytes(server: _Server, cache: Path) -> None:
    path = resolve_weight(f"{server.base}/data/w.pth", key=KEY, sha256=DATA_SHA,
                          cache_dir=str(cache), progress=False)
    assert path == cache / "w.pth"
    assert path.read_bytes() == DATA
    assert _listing(cache) == ["w.pth"]   # no .part-<pid> left behind


def test_download_without_known_checksum_is_refused_before_any_network(server: _Server, cache: Path) -> None:
    with pytest.raises(WeightError) as exc:
        resolve_weight(f"{server.base}/data/free.bin", key=KEY, cache_dir=str(cache), progress=False)
    assert f"set {KEY}_sha256" in _one_line_with_key(exc)
    assert server.paths == [] and _listing(cache) == []


def test_progress_bar_does_not_break_download(server: _Server, cache: Path) -> None:
    path = resolve_weight(f"{server.base}/data/p.pth", key=KEY, sha256=DATA_SHA,
                          cache_dir=str(cache), progress=True)
    assert sha256_of(path) == DATA_SHA


def test_second_call_uses_cache_without_network(server: _Server, cache: Path) -> None:
    url = f"{server.base}/data/w.pth"
    first = resolve_weight(url, key=KEY, sha256=DATA_SHA, cache_dir=str(cache), progress=False)
    assert len(server.paths) == 1
    second = resolve_weight(url, key=KEY, sha256=DATA_SHA, cache_dir=str(cache), progress=False)
    assert second == first
    assert len(server.paths) == 1
    # no checksum known: not even a cached file is trusted
    with pytest.raises(WeightError):
        resolve_weight(url, key=KEY, cache_dir=str(cache), progress=False)
    assert len(server.paths) == 1


def test_known_sha256_by_file_name_is_applied(
        server: _Server, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(KNOWN_SHA256, "known.pth", "0" * 64)
    with pytest.raises(WeightError) as exc:
        resolve_weight(f"{server.base}/data/known.pth", key=KEY, cache_dir=str(cache), progress=False)
    assert "checksum mismatch" in _one_line_with_key(exc)
    monkeypatch.setitem(KNOWN_SHA256, "known.pth", DATA_SHA)
    assert resolve_weight(f"{server.base}/data/known.pth", key=KEY, cache_dir=str(cache),
                          progress=False).read_bytes() == DATA


def test_corrupt_cached_file_is_downloaded_again(server: _Server, cache: Path) -> None:
    cache.mkdir()
    (cache / "w.pth").write_bytes(b"truncated")
    path = resolve_weight(f"{server.base}/data/w.pth", key=KEY, sha256=DATA_SHA,
                          cache_dir=str(cache), progress=False)
    assert path.read_bytes() == DATA
    assert len(server.paths) == 1
    assert _listing(cache) == ["w.pth"]


def test_checksum_mismatch_leaves_no_file(server: _Server, cache: Path) -> None:
    wrong = "ab12" + DATA_SHA[4:] if not DATA_SHA.startswith("ab12") else "cd34" + DATA_SHA[4:]
    with pytest.raises(WeightError) as exc:
        resolve_weight(f"{server.base}/data/w.pth", key=KEY, sha256=wrong,
                       cache_dir=str(cache), progress=False)
    msg = _one_line_with_key(exc)
    assert "checksum mismatch" in msg
    assert wrong[:12] in msg and DATA_SHA[:12] in msg
    assert f"{server.base}/data/w.pth" in msg
    assert _listing(cache) == []


def test_interrupted_transfer_leaves_no_file(server: _Server, cache: Path) -> None:
    url = f"{server.base}/short/w.pth"
    with pytest.raises(WeightError) as exc:
        resolve_weight(url, key=KEY, sha256=DATA_SHA, cache_dir=str(cache), progress=False)
    msg = _one_line_with_key(exc)
    assert "interrupted" in msg
    assert f"after {len(DATA) // 3} of {len(DATA)} bytes" in msg
    assert url in msg and str(cache / "w.pth") in msg
    assert _listing(cache) == []


def test_stalled_body_times_out_and_leaves_no_file(server: _Server, cache: Path) -> None:
    with pytest.raises(WeightError) as exc:
        resolve_weight(f"{server.base}/stall_body/w.pth", key=KEY, sha256=DATA_SHA, cache_dir=str(cache),
                       progress=False, timeout_s=0.3)
    msg = _one_line_with_key(exc)
    assert "stalled" in msg and f"of {len(DATA)} bytes" in msg
    assert _listing(cache) == []


def test_no_response_times_out(server: _Server, cache: Path) -> None:
    with pytest.raises(WeightError) as exc:
        resolve_weight(f"{server.base}/stall_head/w.pth", key=KEY, sha256=DATA_SHA, cache_dir=str(cache),
                       progress=False, timeout_s=0.3)
    assert "no answer within 0.3 s" in _one_line_with_key(exc)
    assert _listing(cache) == []


def test_http_404(server: _Server, cache: Path) -> None:
    url = f"{server.base}/nothing/w.pth"
    with pytest.raises(WeightError) as exc:
        resolve_weight(url, key=KEY, sha256=DATA_SHA, cache_dir=str(cache), progress=False)
    msg = _one_line_with_key(exc)
    assert "HTTP 404" in msg and url in msg
    assert _listing(cache) == []


def test_connection_refused(cache: Path) -> None:
    # a socket bound but not listening: connecting to it is refused, and nobody can take the port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(WeightError) as exc:
            resolve_weight(f"http://127.0.0.1:{port}/w.pth", key=KEY, sha256=DATA_SHA, cache_dir=str(cache),
                           progress=False, timeout_s=2.0)
    msg = _one_line_with_key(exc)
    assert "connection refused" in msg and "check the network" in msg
    assert _listing(cache) == []


def test_url_without_file_name(cache: Path) -> None:
    with pytest.raises(WeightError) as exc:
        resolve_weight("http://127.0.0.1:9/", key=KEY, cache_dir=str(cache), progress=False)
    _one_line_with_key(exc)


# --- local files and other sources --------------------------------------------------------------

def test_local_missing_path_names_key(tmp_path: Path) -> None:
    missing = tmp_path / "x" / "y.pth"
    with pytest.raises(WeightError) as exc:
        resolve_weight(str(missing), key=KEY)
    msg = _one_line_with_key(exc)
    assert str(missing) in msg and "does not exist" in msg and f"set {KEY}" in msg


def test_local_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(WeightError) as exc:
        resolve_weight(str(tmp_path), key="localizer.checkpoint")
    _one_line_with_key(exc, "localizer.checkpoint")


def test_local_file_with_wrong_sha256(tmp_path: Path) -> None:
    f = tmp_path / "w.pth"
    f.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightError) as exc:
        resolve_weight(str(f), key=KEY, sha256="0" * 64)
    msg = _one_line_with_key(exc)
    assert str(f) in msg and "delete or replace the file" in msg
    assert "000000000000" in msg and sha256_of(f)[:12] in msg


def test_local_file_under_official_name_is_checked(tmp_path: Path) -> None:
    f = tmp_path / "sam_vit_b_01ec64.pth"
    f.write_bytes(b"not the official checkpoint")
    with pytest.raises(WeightError) as exc:
        resolve_weight(str(f), key=KEY)
    assert "delete or replace the file" in _one_line_with_key(exc)


def test_local_file_ok_plain_tilde_and_file_url(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "w.pth"
    f.write_bytes(DATA[:1000])
    digest = hashlib.sha256(DATA[:1000]).hexdigest()
    assert resolve_weight(str(f), key=KEY) == f
    assert resolve_weight(str(f), key=KEY, sha256=digest.upper()) == f
    assert resolve_weight(f.as_uri(), key=KEY, sha256=digest) == f
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_weight("~/w.pth", key=KEY) == f


def test_bad_expected_sha256_format(tmp_path: Path) -> None:
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    with pytest.raises(WeightError) as exc:
        resolve_weight(str(f), key=KEY, sha256="abc")
    assert f"{KEY}_sha256" in _one_line_with_key(exc)


@pytest.mark.parametrize("source", ["", "ftp://127.0.0.1/w.pth", "s3://bucket/w.pth"])
def test_empty_or_unsupported_source(source: str) -> None:
    with pytest.raises(WeightError) as exc:
        resolve_weight(source, key=KEY)
    _one_line_with_key(exc)


# --- helpers and constants ----------------------------------------------------------------------

def test_weight_error_is_one_line() -> None:
    assert str(WeightError("a\nb\r\n  c")) == "a b c"
    assert isinstance(WeightError("x"), RuntimeError)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CLIPSAM_ROS_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_cache_dir() == tmp_path / ".cache" / "clipsam_ros"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "clipsam_ros"
    monkeypatch.setenv("CLIPSAM_ROS_CACHE", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    assert default_cache_dir(str(tmp_path / "c")) == tmp_path / "c"
    assert default_cache_dir("~/c") == tmp_path / "c"


def test_sha256_of_matches_hashlib(tmp_path: Path) -> None:
    f = tmp_path / "d"
    f.write_bytes(DATA)
    assert sha256_of(f) == DATA_SHA
    assert sha256_of(f, chunk=4096) == DATA_SHA


def test_official_urls_have_known_checksums() -> None:
    assert set(SAM_URLS) == {"vit_h", "vit_l", "vit_b"}
    for url in SAM_URLS.values():
        assert url.startswith("https://dl.fbaipublicfiles.com/segment_anything/")
        digest = KNOWN_SHA256[url.rsplit("/", 1)[1]]
        assert len(digest) == 64 and int(digest, 16) >= 0
    assert weights.KNOWN_SHA256["sam_vit_h_4b8939.pth"].startswith("a7bf3b02")
