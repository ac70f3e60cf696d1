"""The package index, as the planner needs it: releases, upload dates, Requires-Dist.

This is the only module that talks to the index. It uses the ``pypi-simple`` client at its
default endpoint and the JSON simple API, which carries upload times and Requires-Python per
file. Every transport failure leaves this module as one exception type, `IndexUnavailable`,
with a one-line message, so the command line never shows a traceback.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from email.parser import Parser
from typing import Any, Optional, Sequence

import requests
from packaging.version import InvalidVersion, Version
from pypi_simple import (
    ACCEPT_JSON_ONLY,
    DigestMismatchError,
    DistributionPackage,
    NoMetadataError,
    NoSuchProjectError,
    PyPISimple,
    UnsupportedContentTypeError,
    UnsupportedRepoVersionError,
)

from bgmatrix.errors import BgmatrixError

# Seconds per request; the index answers in well under a second, a hung socket should not
# hang the planner.
TIMEOUT = 30.0
# Wheel downloads are small (60-150 kB) and independent; eight at a time keeps the whole
# FastAPI history (about 340 wheels) well under a minute without hammering the index.
METADATA_WORKERS = 8

# Errors that mean "the index could not be reached or answered nonsense", as opposed to one
# release having odd contents (which is recorded on that release instead).
_TRANSPORT_ERRORS = (
    requests.RequestException,
    UnsupportedContentTypeError,
    UnsupportedRepoVersionError,
    NoSuchProjectError,
    DigestMismatchError,
)


class IndexUnavailable(BgmatrixError):
    """The package index could not be reached or gave unusable answers (one-line message)."""


@dataclass(frozen=True)
class Release:
    """One version of a project as the index describes it.

    ``uploaded`` is the earliest upload time of any of its files (UTC, ``...Z``): that is when
    the version became installable. ``requires_dist`` is ``None`` when the metadata could not
    be read; ``note`` then says why.
    """

    version: str
    uploaded: str
    requires_python: Optional[str] = None
    yanked: bool = False
    requires_dist: Optional[tuple[str, ...]] = None
    note: Optional[str] = None


def make_client() -> PyPISimple:
    """Return a client for the default index, speaking only the JSON simple API."""
    # JSON only: the HTML API has no upload times, and without them there are no cutoffs.
    return PyPISimple(accept=ACCEPT_JSON_ONLY)


def fetch_releases(client: Any) -> tuple[list[Release], list[Release]]:
    """Return (FastAPI releases with Requires-Dist, Starlette releases), final and unyanked."""
    fastapi_files = project_files(client, "fastapi")
    starlette_files = project_files(client, "starlette")
    fastapi = [r for r in releases_of("fastapi", fastapi_files) if not r.yanked]
    starlette = [r for r in releases_of("starlette", starlette_files) if not r.yanked]
    return with_requires_dist(client, fastapi, fastapi_files), starlette


def list_releases(client: Any, project: str) -> list[Release]:
    """Return every final version of ``project`` (yanked ones flagged), without Requires-Dist."""
    return releases_of(project, project_files(client, project))


def project_files(client: Any, project: str) -> dict[str, list[DistributionPackage]]:
    """Return the project's files grouped by final version; pre- and dev-releases dropped."""
    page = _call(client.get_project_page, project, timeout=TIMEOUT)
    grouped: dict[str, list[DistributionPackage]] = defaultdict(list)
    for package in page.packages:
        version = _final_version(package.version)
        if version is not None:
            grouped[str(version)].append(package)
    return dict(grouped)


def releases_of(project: str, files: dict[str, list[DistributionPackage]]) -> list[Release]:
    """Summarise grouped files into releases, oldest version first."""
    return [_release(project, version, files[version]) for version in sorted(files, key=Version)]


def with_requires_dist(
    client: Any, releases: Sequence[Release], files: dict[str, list[DistributionPackage]]
) -> list[Release]:
    """Return ``releases`` with ``requires_dist`` filled in, fetched concurrently."""
    with ThreadPoolExecutor(max_workers=METADATA_WORKERS) as pool:
        futures = [
            pool.submit(_with_metadata, client, release, files.get(release.version, []))
            for release in releases
        ]
        try:
            return [future.result() for future in futures]
        except BaseException:
            # One failure means the index is unreachable: do not wait for the other downloads.
            for future in futures:
                future.cancel()
            raise


def _release(project: str, version: str, files: Sequence[DistributionPackage]) -> Release:
    """Summarise the files of one version into a `Release` (without Requires-Dist)."""
    times = [f.upload_time for f in files if f.upload_time is not None]
    if not times:
        raise IndexUnavailable(
            f"package index unavailable: no upload time for {project} {version} "
            "(the index must serve the JSON simple API)"
        )
    return Release(
        version=version,
        uploaded=iso_utc(min(times)),
        requires_python=_requires_python(files),
        yanked=all(f.is_yanked for f in files),
    )


def _requires_python(files: Sequence[DistributionPackage]) -> Optional[str]:
    """Return the Requires-Python of a version, preferring what its wheel says."""
    # The wheel is what installers pick, so its value is the one that decides installability.
    ordered = sorted(files, key=lambda f: (f.package_type != "wheel", f.is_yanked, f.filename))
    for f in ordered:
        if f.requires_python and f.requires_python.strip():
            return f.requires_python.strip()
    return None


def _with_metadata(client: Any, release: Release, files: Sequence[DistributionPackage]) -> Release:
    """Return ``release`` with Requires-Dist read from the best file that carries it."""
    usable = [f for f in files if not f.is_yanked] or list(files)
    wheels = sorted((f for f in usable if f.package_type == "wheel"), key=lambda f: f.filename)
    sdists = sorted((f for f in usable if f.package_type == "sdist"), key=lambda f: f.filename)
    try:
        if wheels:
            return _replace(release, _wheel_requires_dist(client, wheels[0]), None)
        if sdists:
            requires = _sdist_requires_dist(client, sdists[0])
            if requires is None:
                return _replace(release, None, "sdist only and its PKG-INFO lists no Requires-Dist")
            return _replace(release, requires, None)
    except (zipfile.BadZipFile, tarfile.TarError, KeyError, ValueError, EOFError) as exc:
        return _replace(release, None, f"metadata unreadable: {one_line(exc)}")
    return _replace(release, None, "no wheel or sdist on the index")


def _replace(release: Release, requires: Optional[tuple[str, ...]], note: Optional[str]) -> Release:
    """Return a copy of ``release`` with its Requires-Dist and note set."""
    return Release(
        version=release.version,
        uploaded=release.uploaded,
        requires_python=release.requires_python,
        yanked=release.yanked,
        requires_dist=requires,
        note=note,
    )


def _wheel_requires_dist(client: Any, wheel: DistributionPackage) -> tuple[str, ...]:
    """Read Requires-Dist from PEP 658 metadata if served, else from the wheel itself."""
    if wheel.has_metadata:
        try:
            text = _call(client.get_package_metadata, wheel, timeout=TIMEOUT)
            return requires_dist_of(text)
        except NoMetadataError:
            pass  # advertised but missing: the wheel still has it
    archive = zipfile.ZipFile(io.BytesIO(_download(client, wheel)))
    names = [n for n in archive.namelist() if n.count("/") == 1]
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    return requires_dist_of(archive.read(metadata).decode("utf-8"))


def _sdist_requires_dist(client: Any, sdist: DistributionPackage) -> Optional[tuple[str, ...]]:
    """Read Requires-Dist from an sdist's PKG-INFO; ``None`` when it records none."""
    # Old sdists write metadata 1.x, where an absent Requires-Dist means "not recorded", not
    # "no dependencies"; guessing from setup.py is not worth the risk of a wrong answer.
    if not sdist.filename.endswith(".tar.gz"):
        return None
    with tarfile.open(fileobj=io.BytesIO(_download(client, sdist)), mode="r:gz") as archive:
        member = next(m for m in archive.getmembers() if m.name.count("/") == 1
                      and m.name.endswith("/PKG-INFO"))
        handle = archive.extractfile(member)
        text = handle.read().decode("utf-8") if handle else ""
    requires = requires_dist_of(text)
    return requires or None


def _download(client: Any, package: DistributionPackage) -> bytes:
    """Download a file into memory through the client's session, checking its sha256."""
    response = _call(client.s.get, package.url, timeout=TIMEOUT)
    _call(response.raise_for_status)
    expected = package.digests.get("sha256")
    if expected and hashlib.sha256(response.content).hexdigest() != expected:
        raise IndexUnavailable(
            f"package index unavailable: sha256 mismatch downloading {package.filename}"
        )
    return response.content


def sdist(client: Any, project: str, version: str) -> Optional[tuple[str, bytes]]:
    """``(file name, bytes)`` of the source distribution of ``project`` ``version`` (the first
    by name when there are several), its sha256 checked; ``None`` when the release has none."""
    files = project_files(client, project).get(str(_final_version(version)), [])
    sdists = sorted((f for f in files if f.package_type == "sdist"),
                    key=lambda f: (f.is_yanked, f.filename))
    if not sdists:
        return None
    return sdists[0].filename, _download(client, sdists[0])


def requires_dist_of(metadata: str) -> tuple[str, ...]:
    """Return the Requires-Dist lines of a core-metadata document, in order."""
    message = Parser().parsestr(metadata, headersonly=True)
    return tuple(" ".join(value.split()) for value in message.get_all("Requires-Dist") or [])


def iso_utc(moment: datetime) -> str:
    """Format an aware datetime as 'YYYY-MM-DDTHH:MM:SSZ' in UTC."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def one_line(exc: BaseException) -> str:
    """Return 'Type: message' squeezed onto one short line."""
    text = " ".join(str(exc).split()) or "no detail"
    return f"{type(exc).__name__}: {text[:300]}"


def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Call into the client, turning transport failures into `IndexUnavailable`."""
    try:
        return function(*args, **kwargs)
    except _TRANSPORT_ERRORS as exc:
        raise IndexUnavailable(f"package index could not be reached: {one_line(exc)}") from None


def _final_version(text: Optional[str]) -> Optional[Version]:
    """Parse a file's version; ``None`` for pre-/dev-releases and unparsable names."""
    if text is None:
        return None
    try:
        version = Version(text)
    except InvalidVersion:
        return None
    return None if version.is_prerelease or version.is_devrelease else version
