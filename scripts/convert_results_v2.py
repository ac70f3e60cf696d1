"""Convert a results folder from schema 2 to schema 3, without re-running anything.

    python scripts/convert_results_v2.py [results/]

Schema 2 stored each clause as a mapping (``{"label": "ran", "verdict": "conforms"}``) and
each evidence object in a file of its own, ``evidence/<hash>.json``: on disk every one of
those small files took a 4 KiB block, and the folder twice its content. Schema 3
(bgmatrix/results.py, bgmatrix/evidence.py) stores each clause as a list
(``["conforms", "ran"]``, then the evidence hash for a wire clause, then the reason if any)
and packs the evidence objects into 16 files, ``evidence/<first hex digit>.jsonl``, one
object a line.

Nothing is measured again and nothing is lost: every schema-2 file is expanded here with the
schema-2 reader (below, as bgmatrix/results.py had it, every object checked against its
hash), written through `bgmatrix.results.write`, read back with the current reader and
compared with the expansion before; the folder's content hash (`bgmatrix.snapshot`, the
snapshot id) must be unchanged. Only when every file is converted and checked are the
per-object files removed. Files already at schema 3 are left alone; the conversion is
idempotent.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bgmatrix import evidence, results, snapshot  # noqa: E402

OLD_OBJECT = re.compile(r"[0-9a-f]{16}\.json")  # evidence/<hash>.json, one object a file
FROM_CELL = "cell"


class OldStore:
    """The schema-2 evidence folder: one ``<hash>.json`` a object, checked against its name."""

    def __init__(self, results_dir: Path):
        self.folder = results_dir / evidence.FOLDER
        self.memo: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        if key not in self.memo:
            path = self.folder / f"{key}.json"
            try:
                obj = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise SystemExit(f"{path}: cannot be read ({exc})") from None
            if evidence.digest(obj) != key:
                raise SystemExit(f"{path}: content does not match its hash (edited or corrupt)")
            self.memo[key] = obj
        return self.memo[key]


def expand_v2(stored: dict, store: OldStore) -> dict:
    """The full form of a schema-2 result, as bgmatrix.results.expand made it at schema 2."""
    full = {k: v for k, v in stored.items() if k not in ("tests", "observed", "clauses")}
    observed = stored.get("observed", {})
    records = []
    if stored["tests"] is not None:
        tests = store.get(stored["tests"])
        for name in sorted(tests):
            record = store.get(tests[name])
            obs = {key: observed[key] if ref == FROM_CELL else store.get(ref)
                   for key, ref in record["observations"].items()}
            records.append({**record, "test": name, "observations": obs})
    full["tests"] = records
    by_clause: dict[str, list[str]] = {}
    for record in records:
        for cid in record["clauses"]:
            by_clause.setdefault(cid, []).append(record["test"])
    full["clauses"] = {cid: {**entry, "tests": sorted(set(by_clause.get(cid, [])))}
                       for cid, entry in stored["clauses"].items()}
    if "wire" in stored:
        wire = dict(stored["wire"])
        wire["clauses"] = {cid: {**entry, "evidence": store.get(entry["evidence"])}
                           for cid, entry in stored["wire"]["clauses"].items()}
        full["wire"] = wire
    return full


def convert(folder: Path) -> int:
    folder = Path(folder)
    old_store = OldStore(folder)
    olds: dict[Path, dict] = {}
    for path in results.result_paths(folder):
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("schema_version") == 2:
            if data["cell"]["id"] != path.stem:
                raise SystemExit(f"{path}: its cell id contradicts its file name")
            olds[path] = expand_v2(data, old_store)
        elif data.get("schema_version") != results.STORED_VERSION:
            raise SystemExit(f"{path}: schema_version {data.get('schema_version')!r}: "
                             "convert schema 1 first (scripts/convert_results_v1.py)")
    leftovers = sorted(p for p in old_store.folder.glob("*.json") if OLD_OBJECT.fullmatch(p.name))
    if not olds and not leftovers:
        print(f"{folder}: nothing at schema 2")
        return 0
    before = None
    if olds:
        current = {p.stem: results.load(p) for p in results.result_paths(folder) if p not in olds}
        before = snapshot.content_hash({**current, **{p.stem: f for p, f in olds.items()}})
    for path, full in sorted(olds.items()):
        # the full form keeps every source it had: nothing is carried over from the old file
        results.write(path, full, discard_unmeasured=True)
        if results.load(path) != full:
            raise SystemExit(f"{path}: the converted result does not expand to the original")
    found, errors = results.load_all(folder)
    if errors:
        raise SystemExit("\n".join(errors))
    if before is not None and snapshot.content_hash(found) != before:
        raise SystemExit(f"{folder}: the content hash changed; nothing removed")
    for path in leftovers:  # every result now names packed objects only
        path.unlink()
    print(f"{folder}: {len(olds)} results converted to schema {results.STORED_VERSION}, "
          f"{len(leftovers)} evidence files packed into "
          f"{len(evidence.Store(folder).pack_paths())}; snapshot {snapshot.snapshot_id(folder)}")
    return len(olds)


if __name__ == "__main__":
    convert(Path(sys.argv[1]) if len(sys.argv) > 1 else results.RESULTS_DIR)
