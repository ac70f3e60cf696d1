"""The environment store: one run per entry, entries kept only when complete, least recently
used entries removed beyond the limits, and the key following what decides an install."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from bgmatrix.run import envstore

dropped: list[Path] = []


def drop(path: Path) -> None:
    dropped.append(path)


def build(entry: envstore.Entry, packages: dict | None = None) -> None:
    (entry.path / "bin").mkdir(parents=True)
    (entry.path / "bin" / "python").write_text("x" * 1000)
    entry.keep(packages or {"fastapi": "0.1.0"})


def test_an_entry_is_built_once_then_reused(tmp_path):
    with envstore.checkout(tmp_path, "k", drop) as entry:
        assert entry is not None and entry.fresh
        build(entry)
    with envstore.checkout(tmp_path, "k", drop) as entry:
        assert entry is not None and not entry.fresh
        assert entry.freeze() == {"fastapi": "0.1.0"}


def test_an_entry_not_kept_is_removed(tmp_path):
    with envstore.checkout(tmp_path, "k", drop) as entry:
        assert entry is not None
        (entry.path / "bin").mkdir(parents=True)  # built, but the run was not clean
    assert not (tmp_path / "k").exists()


def test_a_busy_entry_is_not_shared(tmp_path):
    with open(tmp_path / "k.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with envstore.checkout(tmp_path, "k", drop) as entry:
            assert entry is None


def test_an_old_or_broken_entry_is_rebuilt(tmp_path):
    with envstore.checkout(tmp_path, "k", drop) as entry:
        assert entry is not None
        build(entry)
    data = json.loads((tmp_path / "k" / envstore.MARKER).read_text())
    data["built"] = time.time() - envstore.MAX_AGE - 1
    (tmp_path / "k" / envstore.MARKER).write_text(json.dumps(data))
    with envstore.checkout(tmp_path, "k", drop) as entry:
        assert entry is not None and entry.fresh and not entry.path.exists()
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / envstore.MARKER).write_text("{")
    with envstore.checkout(tmp_path, "j", drop) as entry:
        assert entry is not None and entry.fresh


def test_the_store_keeps_its_limits(tmp_path, monkeypatch):
    for name in "abc":
        with envstore.checkout(tmp_path, name, drop) as entry:
            assert entry is not None
            build(entry)
        os.utime(tmp_path / name / envstore.MARKER, (time.time(), time.time() + ord(name)))
    monkeypatch.setenv("BGMATRIX_ENV_STORE_MAX", "2")
    envstore.clean(tmp_path, drop)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["b", "c"]
    monkeypatch.setenv("BGMATRIX_ENV_STORE_BYTES", "2500")  # one entry: 1000 bytes, twice
    envstore.clean(tmp_path, drop)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["c"]
    assert tmp_path / "a" in dropped  # its bytecode goes with it


def test_the_key_follows_the_inputs_and_a_local_release_folder(tmp_path, monkeypatch):
    links = tmp_path / "links"
    links.mkdir()
    monkeypatch.setenv("UV_FIND_LINKS", str(links))
    first = envstore.key({"install": ["fastapi==0.1.0"]})
    assert first == envstore.key({"install": ["fastapi==0.1.0"]})
    assert first != envstore.key({"install": ["fastapi==0.1.1"]})
    (links / "fastapi-0.1.0-py3-none-any.whl").write_bytes(b"new")
    assert first != envstore.key({"install": ["fastapi==0.1.0"]})
    monkeypatch.setenv("UV_INDEX_URL", "file:///elsewhere")
    assert first != envstore.key({"install": ["fastapi==0.1.0"]})
