"""The download stage: get a dataset's archive and unpack it into data/raw/<dataset>/.

Four sources (params.yaml `data.<dataset>.source`):

- synthetic: the sample archive our own code generates (tumorbench.data.synthetic),
- url: any http(s) URL, resumable, retried, checked against `data.<dataset>.sha256`,
- kaggle: Br35H through the Kaggle API (same downloader, with basic auth),
- path: a local zip or an already extracted folder.

Downloads land in a cache folder (`.cache/downloads/` from the stage) that keeps
the partial file (`download.part`) for resuming and the finished archive for
reuse. The archive is unpacked, zips inside it included, into a temporary
folder that replaces `out_dir` only once everything, manifest.json included,
is written, so a failed run leaves no half-filled `out_dir`.
"""

from __future__ import annotations

import base64
import email.message
import http.client
import json
import os
import re
import shutil
import stat
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from tqdm import tqdm

from tumorbench.core.errors import UserError
from tumorbench.core.fileio import atomic_directory, atomic_write_json, sha256_bytes, sha256_file
from tumorbench.data import synthetic as synth

CHUNK = 1 << 20
DEFAULT_URLS = {"figshare": "https://figshare.com/ndownloader/articles/1512427/versions/5"}
KAGGLE_DATASET = "ahmedhamada0/brain-tumor-detection"
KAGGLE_API = "https://www.kaggle.com/api/v1"
KAGGLE_API_ENV = "TUMORBENCH_KAGGLE_API"  # tests point this at a local server
JUNK_FOLDERS = {"__MACOSX"}
JUNK_FILES = {".DS_Store"}
MAX_NESTING = 5  # zips inside zips inside ...; a deeper archive is refused
PART_NAME = "download.part"
USER_AGENT = "tumorbench-download/0.1 (python urllib)"


class DownloadError(UserError, RuntimeError):
    """A download, checksum or unpacking failure, with what to do about it."""


# ------------------------------------------------------------------ entry


def download(
    dataset: str,
    spec: dict,
    synthetic: dict,
    out_dir: Path,
    cache_dir: Path,
    *,
    retries: int = 5,
    backoff: float = 2.0,
    timeout: float = 60.0,
    kaggle_api: str | None = None,
) -> dict:
    """Fetch `dataset` as `spec` (params data.<dataset>) says, unpack into out_dir; return the manifest.

    synthetic: params data.synthetic. retries/backoff: how often and how
    patiently (seconds, doubling) a failing connection is retried.
    kaggle_api: base URL of the Kaggle API (default: $TUMORBENCH_KAGGLE_API or kaggle.com).
    """
    out_dir, cache_dir = Path(out_dir), Path(cache_dir)
    source = spec.get("source")
    expected = str(spec.get("sha256") or "").strip().lower()
    manifest: dict = {"dataset": dataset, "source": source}
    folder = None
    archive_sha = None
    fetch = dict(retries=retries, backoff=backoff, timeout=timeout)
    if source == "synthetic":
        archive = make_synthetic_archive(dataset, synthetic, cache_dir)
        manifest["synthetic"] = synthetic_params(dataset, synthetic)
    elif source == "url":
        url = str(spec.get("url") or "") or DEFAULT_URLS.get(dataset, "")
        if not url:
            raise DownloadError(
                f"data.{dataset}.url is empty: set it to the archive's http(s) URL, "
                f"or use source: path with a local copy"
            )
        archive, archive_sha = fetch_url(
            url, url_cache_folder(cache_dir, dataset, url), dataset=dataset, expected_sha256=expected, **fetch
        )
        manifest["url"] = url
    elif source == "kaggle":
        archive, archive_sha, url = fetch_kaggle(
            cache_dir, dataset=dataset, expected_sha256=expected, api=kaggle_api, **fetch
        )
        manifest["url"] = url
        manifest["kaggle"] = KAGGLE_DATASET
    elif source == "path":
        local = Path(str(spec.get("path") or ""))
        manifest["path"] = str(spec.get("path") or "")
        if not str(spec.get("path") or "") or not local.exists():
            raise DownloadError(
                f"data.{dataset}.path = {manifest['path']!r} does not exist: "
                f"point it at the dataset's zip or extracted folder"
            )
        archive = local if local.is_file() else None
        folder = local if local.is_dir() else None
    else:
        raise DownloadError(f"data.{dataset}.source = {source!r}: expected synthetic, url, kaggle or path")

    if archive is not None:
        archive_sha = archive_sha or sha256_file(archive)
        if expected and archive_sha != expected:
            if source == "synthetic":
                archive.unlink(missing_ok=True)
            raise DownloadError(_sha_mismatch(dataset, str(archive), expected, archive_sha))
    manifest["archive"] = archive.name if archive is not None else None
    manifest["archive_sha256"] = archive_sha

    with atomic_directory(out_dir) as tmp:
        if archive is not None:
            extract_zip(archive, tmp, label=str(archive))
        else:
            copy_folder(folder, tmp)
        unpack_nested(tmp, label=str(archive or folder))
        manifest["files"] = list_files(tmp)
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest


def _sha_mismatch(dataset: str, what: str, expected: str, got: str) -> str:
    return (
        f"{what}: sha256 mismatch: expected {expected} (params.yaml data.{dataset}.sha256), got {got}. "
        f"If the file legitimately changed, set data.{dataset}.sha256 to the new value "
        f'(or to "" to skip the check)'
    )


# -------------------------------------------------------------- synthetic


def synthetic_params(dataset: str, synthetic: dict) -> dict:
    """The data.synthetic values that shape this dataset's generated archive."""
    keys = {
        "br35h": ["seed", "br35h_per_class"],
        "figshare": ["seed", "figshare_per_class", "figshare_patients", "figshare_size"],
    }[dataset]
    return {key: synthetic[key] for key in keys}


def make_synthetic_archive(dataset: str, synthetic: dict, cache_dir: Path) -> Path:
    """Generate the dataset's sample archive into cache_dir (always regenerated: a few seconds)."""
    path = Path(cache_dir) / f"synthetic-{dataset}.zip"
    if dataset == "br35h":
        return synth.write_br35h_zip(path, synthetic["br35h_per_class"], synthetic["seed"])
    if dataset == "figshare":
        return synth.write_figshare_zip(
            path,
            synthetic["figshare_per_class"],
            synthetic["figshare_patients"],
            synthetic["figshare_size"],
            synthetic["seed"],
        )
    raise ValueError(f"no synthetic generator for dataset {dataset!r}")  # a bug: DATASETS grew


# -------------------------------------------------------------------- url


def url_cache_folder(cache_dir: Path, dataset: str, url: str) -> Path:
    """One cache folder per (dataset, URL): holds download.part, then the finished archive."""
    return Path(cache_dir) / f"{dataset}-{sha256_bytes(url.encode())[:12]}"


def cached_archive(folder: Path, expected_sha256: str = "") -> tuple[Path, str] | None:
    """(archive, sha256) of a finished download in `folder`; a cached file failing `expected_sha256` is deleted."""
    if not folder.is_dir():
        return None
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name != PART_NAME and not path.name.startswith("."):
            digest = sha256_file(path)
            if expected_sha256 and digest != expected_sha256:
                path.unlink()
                return None
            return path, digest
    return None


def _filename(headers, url: str, dataset: str) -> str:
    """The archive's name: Content-Disposition's, else the URL's last part if it has a suffix, else <dataset>.zip."""
    disposition = headers.get("Content-Disposition") if headers is not None else None
    candidates = []
    if disposition:
        message = email.message.Message()
        message["Content-Disposition"] = disposition
        candidates.append(message.get_filename() or "")
    candidates.append(urllib.request.url2pathname(urlsplit(url).path.rsplit("/", 1)[-1]))
    for name in candidates:
        name = PurePosixPath(name.replace("\\", "/")).name.strip()
        if name and name not in (".", "..", PART_NAME) and not name.startswith(".") and "." in name:
            return name
    return f"{dataset}.zip"


class _DropAuthOnRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never send our Authorization header to another host.

    Kaggle answers with a redirect to a signed storage URL; that server
    rejects (and should never see) the Kaggle credentials.
    """

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


def _content_range_start(headers) -> int | None:
    match = re.match(r"\s*bytes\s+(\d+)-", headers.get("Content-Range") or "")
    return int(match.group(1)) if match else None


def _fetch_once(opener, url: str, headers: dict, part: Path, timeout: float, dataset: str) -> str:
    """One GET of `url` into `part`, resuming from its size with a Range header; return the archive name.

    Raises ConnectionError when the connection ends before the announced length.
    """
    offset = part.stat().st_size if part.exists() else 0
    request_headers = dict(headers)
    if offset:
        request_headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=request_headers)
    with opener.open(request, timeout=timeout) as response:
        name = _filename(response.headers, url, dataset)
        if offset and response.status == 206:
            if _content_range_start(response.headers) != offset:
                part.unlink()
                raise ConnectionError(f"server resumed at the wrong place ({response.headers.get('Content-Range')})")
            mode = "ab"
        else:  # a fresh download, or a server that ignored Range and sends everything (200)
            mode, offset = "wb", 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        with (
            open(part, mode) as f,
            tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=name, file=sys.stderr
            ) as bar,
        ):
            while chunk := response.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size < total:
        raise ConnectionError(f"connection closed after {size} of {total} bytes")
    return name


def _retryable(error: BaseException) -> bool:
    if isinstance(error, urllib.error.HTTPError):
        return error.code >= 500 or error.code in (408, 429)
    return isinstance(error, (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException))


def fetch_url(
    url: str,
    folder: Path,
    *,
    dataset: str,
    expected_sha256: str = "",
    headers: dict | None = None,
    retries: int = 5,
    backoff: float = 2.0,
    timeout: float = 60.0,
    auth_hint: str = "",
) -> tuple[Path, str]:
    """Download `url` into `folder`; return (archive path, sha256).

    A finished archive already in `folder` is reused. Otherwise the download
    goes to folder/download.part, resumed with HTTP Range after a cut
    connection; connection errors and 5xx answers are retried up to
    `retries` times in a row (an attempt that got bytes starts the count
    again), waiting backoff, 2*backoff, ... seconds. The
    finished file is checked against expected_sha256 (deleted if it fails).
    auth_hint: added to the error for 401/403 answers.
    """
    folder = Path(folder)
    expected_sha256 = expected_sha256.lower()
    cached = cached_archive(folder, expected_sha256)
    if cached:
        print(f"using cached {cached[0]}", file=sys.stderr)
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / PART_NAME
    opener = urllib.request.build_opener(_DropAuthOnRedirect())
    headers = {"User-Agent": USER_AGENT, **(headers or {})}
    failures = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            name = _fetch_once(opener, url, headers, part, timeout, dataset)
            break
        except urllib.error.HTTPError as error:
            if error.code == 416 and part.exists():  # our part is not a prefix of what the server has now
                part.unlink()
            elif not _retryable(error):
                hint = f" {auth_hint}" if error.code in (401, 403) and auth_hint else ""
                raise DownloadError(f"{url}: HTTP {error.code} {error.reason}.{hint}") from error
            reason = f"HTTP {error.code} {error.reason}"
        except Exception as error:
            if not _retryable(error):
                raise
            reason = str(error) or type(error).__name__
        after = part.stat().st_size if part.exists() else 0
        failures = 1 if after > before else failures + 1  # a failure after progress forgives the earlier ones
        if failures > retries:
            raise DownloadError(
                f"{url}: giving up after {retries} retries: {reason}. "
                f"The partial file {part} is kept: run again to resume"
            )
        wait = min(backoff * 2 ** max(failures - 1, 0), 60.0)
        print(f"download interrupted ({reason}); resuming in {wait:g} s", file=sys.stderr)
        time.sleep(wait)

    digest = sha256_file(part)
    if expected_sha256 and digest != expected_sha256:
        part.unlink()
        raise DownloadError(_sha_mismatch(dataset, url, expected_sha256, digest) + "; the download was deleted")
    archive = folder / name
    os.replace(part, archive)
    return archive, digest


# ----------------------------------------------------------------- kaggle


def kaggle_credentials() -> tuple[str, str]:
    """(username, key) from $KAGGLE_USERNAME/$KAGGLE_KEY, else kaggle.json in $KAGGLE_CONFIG_DIR or ~/.kaggle."""
    user, key = os.environ.get("KAGGLE_USERNAME", ""), os.environ.get("KAGGLE_KEY", "")
    if user and key:
        return user, key
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    path = config_dir / "kaggle.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            return str(data["username"]), str(data["key"])
        except (ValueError, KeyError, TypeError) as error:
            raise DownloadError(
                f'{path}: expected JSON {{"username": ..., "key": ...}} '
                f"(download a fresh one from kaggle.com -> Settings -> API -> Create New Token)"
            ) from error
    raise DownloadError(
        "source kaggle needs Kaggle API credentials, and none were found: on kaggle.com go to "
        "Settings -> API -> Create New Token, save the kaggle.json it downloads as "
        f"{path} (chmod 600 {path}), or set KAGGLE_USERNAME and KAGGLE_KEY. "
        "Or download the dataset yourself and set data.br35h.source: path (with data.br35h.path: the zip or "
        "folder), or source: url with a direct link"
    )


def fetch_kaggle(
    cache_dir: Path,
    *,
    dataset: str = "br35h",
    expected_sha256: str = "",
    api: str | None = None,
    retries: int = 5,
    backoff: float = 2.0,
    timeout: float = 60.0,
) -> tuple[Path, str, str]:
    """Download Br35H through the Kaggle API; return (archive, sha256, URL). Credentials only if not cached."""
    if dataset != "br35h":
        raise DownloadError(
            f"data.{dataset}.source = kaggle: only br35h ({KAGGLE_DATASET}) comes from Kaggle; "
            f"use source: url, path or synthetic for {dataset}"
        )
    api = (api or os.environ.get(KAGGLE_API_ENV) or KAGGLE_API).rstrip("/")
    url = f"{api}/datasets/download/{KAGGLE_DATASET}"
    folder = url_cache_folder(cache_dir, dataset, url)
    cached = cached_archive(folder, expected_sha256.lower())
    if cached:
        return (*cached, url)
    user, key = kaggle_credentials()
    token = base64.b64encode(f"{user}:{key}".encode()).decode("ascii")
    hint = (
        f"Kaggle refused the credentials of user {user!r}: check the key (Settings -> API -> "
        f"Create New Token) and that you accepted the dataset's terms on kaggle.com/datasets/{KAGGLE_DATASET}"
    )
    archive, digest = fetch_url(
        url,
        folder,
        dataset=dataset,
        expected_sha256=expected_sha256,
        headers={"Authorization": f"Basic {token}"},
        retries=retries,
        backoff=backoff,
        timeout=timeout,
        auth_hint=hint,
    )
    return archive, digest, url


# ------------------------------------------------------------- unpacking


def _is_junk(relative: str) -> bool:
    parts = relative.replace("\\", "/").split("/")
    return any(p in JUNK_FOLDERS for p in parts) or parts[-1] in JUNK_FILES


def _safe_parts(label: str, member: zipfile.ZipInfo, root: Path) -> list[str]:
    """The member's path parts, or an error if it could land outside `root`."""
    name = member.filename.replace("\\", "/")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    unsafe = (
        name.startswith("/")
        or re.match(r"^[A-Za-z]:", name)
        or ".." in parts
        or "\x00" in name
        or stat.S_ISLNK(member.external_attr >> 16)
    )
    if not unsafe and parts:
        unsafe = not (root / Path(*parts)).resolve().is_relative_to(root)
    if unsafe:
        raise DownloadError(
            f"{label}: refusing to unpack member {member.filename!r}: it would land outside the "
            f"target folder (absolute path, '..' or symlink). Get the archive from the official source"
        )
    return parts


def extract_zip(archive: Path, target: Path, label: str | None = None) -> None:
    """Unpack a zip into `target`, skipping __MACOSX/.DS_Store; every member is checked before anything is written."""
    label = label or str(archive)
    if not zipfile.is_zipfile(archive):
        with open(archive, "rb") as f:
            start = f.read(16)
        raise DownloadError(
            f"{label}: not a zip archive (it starts with {start!r}); expected the dataset's .zip "
            f"(an HTML page here usually means a login or error page was downloaded)"
        )
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.infolist() if not _is_junk(m.filename)]
        planned = [(m, _safe_parts(label, m, root)) for m in members]
        for member, parts in tqdm(planned, desc=f"unpack {Path(label).name}", unit="file", file=sys.stderr):
            if not parts:
                continue
            dest = target.joinpath(*parts)
            if member.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)


def unpack_nested(root: Path, label: str = "") -> None:
    """Unpack every *.zip under root into a folder named after it (without .zip), then delete it; repeat."""
    for depth in range(MAX_NESTING + 1):
        inner = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".zip")
        if not inner:
            return
        if depth == MAX_NESTING:
            raise DownloadError(f"{label}: zips nested more than {MAX_NESTING} deep ({inner[0].relative_to(root)})")
        for path in inner:
            target = path.with_name(path.name[: -len(".zip")])
            if target.exists() and not target.is_dir():
                raise DownloadError(
                    f"{label}: cannot unpack {path.relative_to(root)}: a file named "
                    f"{target.relative_to(root)} is in the way"
                )
            extract_zip(path, target, label=f"{label} > {path.relative_to(root).as_posix()}")
            path.unlink()


def copy_folder(source: Path, target: Path) -> None:
    """Copy an extracted dataset folder (symlinks followed, junk skipped)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*JUNK_FOLDERS, *JUNK_FILES), dirs_exist_ok=True)


def list_files(root: Path) -> list[dict]:
    """Every file under root except the top manifest.json: path (posix, relative), size, sha256; sorted by path."""
    paths = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())
    files = []
    for path in tqdm(paths, desc="sha256", unit="file", file=sys.stderr):
        relative = path.relative_to(root).as_posix()
        if relative == "manifest.json":
            continue
        files.append({"path": relative, "size": path.stat().st_size, "sha256": sha256_file(path)})
    return files
