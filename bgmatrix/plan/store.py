"""What nox needs from the plan: the cells, read with the standard library alone.

noxfile.py runs inside nox's own environment, which has none of bgmatrix's dependencies, and
``nox -l`` must stay fast and offline; so this module reads matrix/plan.json with ``json`` and
checks just enough to give a one-line error for a missing or corrupt plan.
"""

from __future__ import annotations

import json
from pathlib import Path

PLAN_PATH = Path(__file__).resolve().parents[2] / "matrix" / "plan.json"
PLAN_SCHEMA = 1


class PlanFileError(Exception):
    """matrix/plan.json is missing, corrupt or of another schema."""


def load_cells(path: Path = PLAN_PATH) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanFileError(f"{path}: no plan; run `nox -s plan`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlanFileError(f"{path}: unreadable or corrupt ({exc}); run `nox -s plan`") from None
    if not isinstance(data, dict) or data.get("schema") != PLAN_SCHEMA:
        raise PlanFileError(f"{path}: not a schema-{PLAN_SCHEMA} plan; run `nox -s plan`")
    cells = data.get("cells")
    if not isinstance(cells, list) or not all(
        isinstance(c, dict) and isinstance(c.get("id"), str) and isinstance(c.get("tags"), list)
        for c in cells
    ):
        raise PlanFileError(f"{path}: malformed cell list; run `nox -s plan`")
    return cells
