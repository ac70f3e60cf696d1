"""Convert a results folder from schema 1 to schema 2, without re-running anything.

    python scripts/convert_results_v1.py [results/]

Schema 1 kept every test's event log in every cell file (74 MB for the matrix) and the run's
own facts in each file. Schema 2 (bgmatrix/results.py) keeps the same evidence once, by hash,
in results/evidence/, and the run's facts in one run record (results/run.json). Per file:

- every test record, observation, warning, clause verdict, wire section: kept, byte for byte
  once expanded (the converter checks `results.load(new) == old` minus the fields below);
- ``provenance.started`` / ``finished``: become the run record's started (earliest) and
  finished (latest); the record's date is the newest finished date, so snapshot ids keep
  their date;
- ``provenance.tools`` bgmatrix / uv / host-python and ``platform``: the run record's host
  (they describe the machine that ran the tools, identical in every file of the sweep);
- ``provenance.interpreter`` (a path on one machine): replaced by ``implementation``.

Files at schema 2 or later are left alone (scripts/convert_results_v2.py takes schema 2 to 3);
schema-1 files are written in the current stored form. The conversion is idempotent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bgmatrix import results, snapshot  # noqa: E402

HOST_TOOLS = ("bgmatrix", "uv", "host-python")
RUN_FIELDS = ("started", "finished", "interpreter", "platform")


def upgrade(old: dict) -> dict:
    """The schema-2 full form of a schema-1 result."""
    new = json.loads(json.dumps(old))
    new["schema_version"] = results.SCHEMA_VERSION
    prov = new["provenance"]
    interpreter = prov.get("interpreter") or ""
    for key in RUN_FIELDS:
        prov.pop(key, None)
    prov["tools"] = {k: v for k, v in prov.get("tools", {}).items() if k not in HOST_TOOLS}
    if prov.get("python"):
        prov["implementation"] = "PyPy" if "pypy" in interpreter.lower() else "CPython"
    return new


def convert(folder: Path) -> int:
    olds = {}
    for path in results.result_paths(folder):
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("schema_version") == 1:
            olds[path] = data
    if not olds:
        print(f"{folder}: nothing at schema 1")
        return 0
    for path, old in sorted(olds.items()):
        results.write(path, upgrade(old), discard_unmeasured=True)
        back = results.load(path)
        if back != upgrade(old):
            raise SystemExit(f"{path}: the converted result does not expand to the original")
    provs = [o["provenance"] for o in olds.values()]
    newest = max(provs, key=lambda p: p.get("finished", ""))
    tools = newest.get("tools", {})
    found, errors = results.load_all(folder)
    if errors:
        raise SystemExit("\n".join(errors))
    record = {
        "schema_version": 1,
        "content": snapshot.content_hash(found),
        "date": newest["finished"][:10],
        "started": min(p.get("started", "") for p in provs),
        "finished": newest["finished"],
        "cells_run": len(olds),
        "host": {
            "bgmatrix": tools.get("bgmatrix", "?"),
            "platform": newest.get("platform", "?"),
            "python": f"CPython {tools.get('host-python', '?')}",
            "uv": tools.get("uv", "?"),
        },
    }
    results.write_text_atomic(folder / snapshot.RUN_RECORD,
                              json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"{folder}: {len(olds)} results converted to schema {results.STORED_VERSION}; "
          f"snapshot {snapshot.snapshot_id(folder)}")
    return len(olds)


if __name__ == "__main__":
    convert(Path(sys.argv[1]) if len(sys.argv) > 1 else results.RESULTS_DIR)
