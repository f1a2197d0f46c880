"""The download stage against a local HTTP server: resume, retries, checksums, Kaggle auth, unpacking, manifest."""

import base64
import hashlib
import io
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tumorbench.data.download import DownloadError, download, extract_zip, url_cache_folder

PROJECT = Path(__file__).resolve().parents[2]
SYNTHETIC = {
    "seed": 1,
    "br35h_per_class": 3,
    "figshare_per_class": [2, 3, 2],
    "figshare_patients": 3,
    "figshare_size": 48,
}
KAGGLE_PATH = "/api/v1/datasets/download/ahmedhamada0/brain-tumor-detection"
FAST = dict(retries=2, backoff=0.0, timeout=10.0)


def make_zip(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return out.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


PAYLOAD = make_zip(
    {
        "yes/y0.jpg": os.urandom(50_000),
        "no/no0.jpg": b"n" * 40_000,
        "inner.zip": make_zip({"a/b.txt": b"deep", "deeper.zip": make_zip({"c.txt": b"deepest"})}),
        "__MACOSX/._yes": b"junk",
        "yes/.DS_Store": b"junk",
    }
)


# ----------------------------------------------------------------- server


class Handler(BaseHTTPRequestHandler):
    """Serves the server's `routes` (path -> dict), recording every request's path and headers.

    Route keys: data (bytes), cut (bytes sent before dropping the connection,
    first request only), ignore_range, fail (number of 500 answers first),
    disposition, auth (required "user:key"), redirect (path on the
    `localhost` host name, so it is another host than 127.0.0.1).
    """

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, dict(self.headers)))
        route = server.routes.get(self.path)
        if route is None:
            return self.answer(404)
        route["hits"] = route.get("hits", 0) + 1
        if route.get("auth"):
            expected = "Basic " + base64.b64encode(route["auth"].encode()).decode()
            if self.headers.get("Authorization") != expected:
                return self.answer(401)
        if route.get("fail", 0) >= route["hits"]:
            return self.answer(500)
        if route.get("redirect"):
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{server.server_port}{route['redirect']}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data, start = route["data"], 0
        ranged = self.headers.get("Range")
        if ranged and not route.get("ignore_range"):
            start = int(ranged.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        if route.get("disposition"):
            self.send_header("Content-Disposition", route["disposition"])
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if route.get("cut") and route["hits"] == 1:
            self.wfile.write(body[: route["cut"]])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)

    def answer(self, code):
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.routes, httpd.requests = {}, []
    httpd.url = f"http://127.0.0.1:{httpd.server_port}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def requests_to(server, path):
    return [headers for p, headers in server.requests if p == path]


def url_spec(url, sha256=""):
    return {"source": "url", "url": url, "path": "", "sha256": sha256}


def all_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def check_manifest(out_dir: Path, manifest: dict):
    on_disk = json.loads((out_dir / "manifest.json").read_text())
    assert on_disk == manifest
    listed = [f["path"] for f in manifest["files"]]
    assert listed == sorted(listed)
    assert set(listed) == all_files(out_dir) - {"manifest.json"}
    for entry in manifest["files"]:
        data = (out_dir / entry["path"]).read_bytes()
        assert entry["size"] == len(data) and entry["sha256"] == sha(data)


# -------------------------------------------------------------------- url


def test_cut_connection_resumes_from_part_file(server, tmp_path):
    server.routes["/files/data.zip"] = {"data": PAYLOAD, "cut": 30_000}
    out, cache = tmp_path / "raw" / "figshare", tmp_path / "cache"
    url = server.url + "/files/data.zip"
    with pytest.raises(DownloadError, match="resume"):  # no retries: the cut is fatal, the part file stays
        download("figshare", url_spec(url, sha(PAYLOAD)), SYNTHETIC, out, cache, retries=0, backoff=0.0)
    part = url_cache_folder(cache, "figshare", url) / "download.part"
    assert part.stat().st_size == 30_000
    assert not out.exists()

    manifest = download("figshare", url_spec(url, sha(PAYLOAD)), SYNTHETIC, out, cache, **FAST)
    headers = requests_to(server, "/files/data.zip")
    assert len(headers) == 2
    assert "Range" not in headers[0] and headers[1]["Range"] == "bytes=30000-"
    assert manifest["archive_sha256"] == sha(PAYLOAD) and manifest["url"] == url and manifest["source"] == "url"
    assert not part.exists()
    assert (url_cache_folder(cache, "figshare", url) / "data.zip").read_bytes() == PAYLOAD
    check_manifest(out, manifest)


def test_retry_within_one_run_and_server_ignoring_range(server, tmp_path):
    server.routes["/files/data.zip"] = {"data": PAYLOAD, "cut": 20_000, "ignore_range": True}
    manifest = download(
        "br35h", url_spec(server.url + "/files/data.zip"), SYNTHETIC, tmp_path / "out", tmp_path / "cache", **FAST
    )
    headers = requests_to(server, "/files/data.zip")
    assert len(headers) == 2 and headers[1]["Range"] == "bytes=20000-"  # asked to resume, got the whole file
    assert manifest["archive_sha256"] == sha(PAYLOAD)
    check_manifest(tmp_path / "out", manifest)


def test_server_errors_are_retried_then_given_up(server, tmp_path):
    server.routes["/flaky.zip"] = {"data": PAYLOAD, "fail": 2}
    manifest = download(
        "br35h", url_spec(server.url + "/flaky.zip"), SYNTHETIC, tmp_path / "a", tmp_path / "c1", **FAST
    )
    assert manifest["archive_sha256"] == sha(PAYLOAD) and len(requests_to(server, "/flaky.zip")) == 3

    server.routes["/down.zip"] = {"data": PAYLOAD, "fail": 99}
    with pytest.raises(DownloadError, match="HTTP 500"):
        download("br35h", url_spec(server.url + "/down.zip"), SYNTHETIC, tmp_path / "b", tmp_path / "c2", **FAST)
    assert len(requests_to(server, "/down.zip")) == 3  # first try + 2 retries
    with pytest.raises(DownloadError, match="404"):
        download("br35h", url_spec(server.url + "/missing.zip"), SYNTHETIC, tmp_path / "d", tmp_path / "c3", **FAST)
    assert len(requests_to(server, "/missing.zip")) == 1  # client errors are not retried


def test_sha256_mismatch_deletes_download_and_creates_nothing(server, tmp_path):
    server.routes["/files/data.zip"] = {"data": PAYLOAD}
    out, cache = tmp_path / "raw" / "figshare", tmp_path / "cache"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as error:
        download("figshare", url_spec(server.url + "/files/data.zip", wrong), SYNTHETIC, out, cache, **FAST)
    message = str(error.value)
    assert wrong in message and sha(PAYLOAD) in message and "data.figshare.sha256" in message
    assert not out.exists()
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_filename_from_content_disposition_and_cache_reuse(server, tmp_path):
    server.routes["/ndownloader/articles/1512427/versions/5"] = {
        "data": PAYLOAD,
        "disposition": 'attachment; filename="1512427.zip"',
    }
    url = server.url + "/ndownloader/articles/1512427/versions/5"
    cache = tmp_path / "cache"
    first = download("figshare", url_spec(url), SYNTHETIC, tmp_path / "out", cache, **FAST)
    assert (url_cache_folder(cache, "figshare", url) / "1512427.zip").exists()
    assert first["archive"] == "1512427.zip"
    second = download("figshare", url_spec(url, sha(PAYLOAD)), SYNTHETIC, tmp_path / "out", cache, **FAST)
    assert second == first
    assert len(requests_to(server, "/ndownloader/articles/1512427/versions/5")) == 1  # served from the cache
    # A cached archive that fails a (new) expected sha256 is dropped and fetched again.
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download("figshare", url_spec(url, "a" * 64), SYNTHETIC, tmp_path / "out", cache, **FAST)
    assert len(requests_to(server, "/ndownloader/articles/1512427/versions/5")) == 2
    assert [p for p in cache.rglob("*") if p.is_file()] == []
    assert all_files(tmp_path / "out") == {f["path"] for f in first["files"]} | {"manifest.json"}  # old output kept


@pytest.mark.parametrize("bad", ["../evil.txt", "/abs/evil.txt", "ok/../../evil.txt", "link"])
def test_members_escaping_the_target_are_refused(server, tmp_path, bad):
    symlinks = {"link": "../../evil.txt"} if bad == "link" else None
    members = {} if bad == "link" else {bad: b"gotcha"}
    data = make_zip({"yes/y0.jpg": b"fine", **members}, symlinks)
    server.routes["/evil.zip"] = {"data": data}
    out = tmp_path / "work" / "raw" / "br35h"
    with pytest.raises(DownloadError, match="refusing to unpack member") as error:
        download("br35h", url_spec(server.url + "/evil.zip"), SYNTHETIC, out, tmp_path / "cache", **FAST)
    assert "evil.zip" in str(error.value) and repr(bad) in str(error.value)
    assert not out.exists()
    assert not any(p.name == "evil.txt" for p in tmp_path.rglob("*"))
    assert not Path("/abs/evil.txt").exists()


def test_nested_zips_are_unpacked_and_junk_skipped(server, tmp_path):
    server.routes["/files/data.zip"] = {"data": PAYLOAD}
    out = tmp_path / "out"
    manifest = download("figshare", url_spec(server.url + "/files/data.zip"), SYNTHETIC, out, tmp_path / "c", **FAST)
    assert all_files(out) == {"yes/y0.jpg", "no/no0.jpg", "inner/a/b.txt", "inner/deeper/c.txt", "manifest.json"}
    assert (out / "inner" / "deeper" / "c.txt").read_bytes() == b"deepest"
    check_manifest(out, manifest)


def test_failed_rerun_keeps_previous_output_and_success_replaces_it(server, tmp_path):
    server.routes["/files/data.zip"] = {"data": PAYLOAD}
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old run")
    server.routes["/bad.zip"] = {"data": b"<html>login</html>"}
    with pytest.raises(DownloadError, match="not a zip"):
        download("br35h", url_spec(server.url + "/bad.zip"), SYNTHETIC, out, tmp_path / "c", **FAST)
    assert all_files(out) == {"stale.txt"}
    download("br35h", url_spec(server.url + "/files/data.zip"), SYNTHETIC, out, tmp_path / "c", **FAST)
    assert "stale.txt" not in all_files(out)
    assert {p.name for p in tmp_path.iterdir()} == {"out", "c"}  # no temporary folders left behind


# ----------------------------------------------------------------- kaggle


@pytest.fixture
def no_kaggle_env(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / ".kaggle"))
    return home


KAGGLE_SPEC = {"source": "kaggle", "url": "", "path": "", "sha256": ""}


def test_kaggle_without_credentials_explains_what_to_do(no_kaggle_env, server, tmp_path):
    with pytest.raises(DownloadError) as error:
        download("br35h", KAGGLE_SPEC, SYNTHETIC, tmp_path / "out", tmp_path / "c", kaggle_api=server.url, **FAST)
    message = str(error.value)
    assert "kaggle.json" in message and "Create New Token" in message and "chmod 600" in message
    assert "source: path" in message and "KAGGLE_USERNAME" in message
    assert server.requests == []


def test_kaggle_download_sends_basic_auth_not_to_the_storage_host(no_kaggle_env, server, tmp_path, monkeypatch, capsys):
    config = no_kaggle_env / ".kaggle"
    config.mkdir()
    secret = "0123456789abcdefsecret"
    (config / "kaggle.json").write_text(json.dumps({"username": "alice", "key": secret}))
    server.routes[KAGGLE_PATH] = {"auth": f"alice:{secret}", "redirect": "/storage/br35h.zip"}
    server.routes["/storage/br35h.zip"] = {
        "data": PAYLOAD,
        "disposition": "attachment; filename=brain-tumor-detection.zip",
    }
    monkeypatch.setenv("TUMORBENCH_KAGGLE_API", server.url + "/api/v1")
    manifest = download("br35h", KAGGLE_SPEC, SYNTHETIC, tmp_path / "out", tmp_path / "c", **FAST)
    api_headers = requests_to(server, KAGGLE_PATH)
    assert api_headers[0]["Authorization"] == "Basic " + base64.b64encode(f"alice:{secret}".encode()).decode()
    storage_headers = requests_to(server, "/storage/br35h.zip")
    assert len(storage_headers) == 1 and "Authorization" not in storage_headers[0]
    assert manifest["archive"] == "brain-tumor-detection.zip" and manifest["archive_sha256"] == sha(PAYLOAD)
    assert manifest["kaggle"] == "ahmedhamada0/brain-tumor-detection"
    check_manifest(tmp_path / "out", manifest)
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err + json.dumps(manifest)


def test_kaggle_wrong_key_names_user_not_key(no_kaggle_env, server, tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "bob")
    monkeypatch.setenv("KAGGLE_KEY", "wrongkey123")
    server.routes[KAGGLE_PATH] = {"auth": "bob:rightkey", "data": PAYLOAD}
    with pytest.raises(DownloadError, match="401") as error:
        download(
            "br35h", KAGGLE_SPEC, SYNTHETIC, tmp_path / "out", tmp_path / "c", kaggle_api=server.url + "/api/v1", **FAST
        )
    assert "'bob'" in str(error.value) and "wrongkey123" not in str(error.value)
    assert len(requests_to(server, KAGGLE_PATH)) == 1


# ------------------------------------------------------------------- path


def test_path_source_folder(tmp_path):
    source = tmp_path / "Br35H"
    (source / "yes").mkdir(parents=True)
    (source / "no").mkdir()
    (source / "__MACOSX").mkdir()
    (source / "yes" / "y0.jpg").write_bytes(b"y" * 10)
    (source / "no" / "no0.jpg").write_bytes(b"n" * 20)
    (source / "no" / ".DS_Store").write_bytes(b"junk")
    (source / "__MACOSX" / "junk").write_bytes(b"junk")
    (source / "extra.zip").write_bytes(make_zip({"e.txt": b"e"}))
    out = tmp_path / "out"
    manifest = download(
        "br35h", {"source": "path", "path": str(source), "url": "", "sha256": ""}, SYNTHETIC, out, tmp_path / "c"
    )
    assert all_files(out) == {"yes/y0.jpg", "no/no0.jpg", "extra/e.txt", "manifest.json"}
    assert manifest["archive_sha256"] is None and manifest["path"] == str(source)
    assert (source / "extra.zip").exists()  # the user's folder is left alone
    check_manifest(out, manifest)


def test_path_source_zip_and_its_checksum(tmp_path):
    archive = tmp_path / "br35h.zip"
    archive.write_bytes(PAYLOAD)
    spec = {"source": "path", "path": str(archive), "url": "", "sha256": sha(PAYLOAD)}
    manifest = download("br35h", spec, SYNTHETIC, tmp_path / "out", tmp_path / "c")
    assert manifest["archive_sha256"] == sha(PAYLOAD)
    assert "inner/a/b.txt" in all_files(tmp_path / "out")
    check_manifest(tmp_path / "out", manifest)
    with pytest.raises(DownloadError, match="data.br35h.sha256"):
        download("br35h", {**spec, "sha256": "f" * 64}, SYNTHETIC, tmp_path / "out2", tmp_path / "c")
    assert archive.exists() and not (tmp_path / "out2").exists()  # never deletes the user's file
    with pytest.raises(DownloadError, match="does not exist"):
        download("br35h", {**spec, "path": str(tmp_path / "nope.zip")}, SYNTHETIC, tmp_path / "out3", tmp_path / "c")


def test_extract_zip_refuses_before_writing_anything(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(make_zip({"first.txt": b"1", "../second.txt": b"2"}))
    with pytest.raises(DownloadError, match="second.txt"):
        extract_zip(archive, tmp_path / "target")
    assert all_files(tmp_path / "target") == set()


# -------------------------------------------------------------- synthetic


def test_synthetic_source_and_stage_script(tmp_path):
    spec = {"source": "synthetic", "url": "", "path": "", "sha256": ""}
    out, cache = tmp_path / "raw" / "br35h", tmp_path / "cache"
    manifest = download("br35h", spec, SYNTHETIC, out, cache)
    assert manifest["archive_sha256"] == sha((cache / "synthetic-br35h.zip").read_bytes())
    assert manifest["synthetic"] == {"seed": 1, "br35h_per_class": 3}
    assert {"yes/y0.jpg", "no/no0.jpg"} <= all_files(out)
    check_manifest(out, manifest)

    # The stage script, run from a project root holding only params.yaml.
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["data"]["figshare"] = {"source": "synthetic", "url": "", "path": "", "sha256": ""}
    params["data"]["synthetic"].update(SYNTHETIC)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(
        [sys.executable, str(PROJECT / "stages" / "download.py"), "figshare"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("download@figshare: synthetic: 9 files")
    staged = json.loads((tmp_path / "data" / "raw" / "figshare" / "manifest.json").read_text())
    assert staged["archive_sha256"] in result.stdout
    assert (tmp_path / ".cache" / "downloads" / "synthetic-figshare.zip").exists()
