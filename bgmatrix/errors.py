"""Every error bgmatrix raises on purpose, in one tree.

``bgmatrix <verb>`` turns any :class:`BgmatrixError` into its message on stderr (one line,
or one line per problem when several were found) and exit code 2, in one place
(:func:`bgmatrix.cli.main`); Ctrl-C anywhere is one line and exit code 130. Nothing else in the
package prints errors or chooses exit codes. An exception that is *not* in this tree is a bug
and keeps its traceback.

    BgmatrixError                    base: a one-line message for the person at the keyboard
    ├── UsageError                   bad arguments: unknown verb target, cell, tag, version, clause
    ├── SpecError                    spec/ lacks the shape the tools rely on      (bgmatrix.spec)
    ├── ResultError                  a result file is missing, corrupt or stale   (bgmatrix.results)
    ├── EvidenceError                an evidence object is missing or corrupt    (bgmatrix.evidence)
    ├── PlanError                    a plan cannot be built or written            (bgmatrix.plan)
    │   └── PlanFileError            matrix/plan.json is missing, corrupt or of another schema
    ├── IndexUnavailable             the package index cannot be reached    (bgmatrix.plan.index)
    ├── CellError                    one cell cannot be set up (its ``state`` is recorded)
    │                                                         (bgmatrix.run.env / run.runner)
    ├── Interrupted                  a child process was stopped by Ctrl-C: exit 130, not 2
    ├── WireUnavailable              no server can be run in this cell         (bgmatrix.run.wire)
    ├── WireTimeout                  wire scenarios overran their budget       (bgmatrix.run.wire)
    ├── CandidateError               a candidate build cannot be made    (bgmatrix.run.candidates)
    ├── DeployError                  matrix/deployment.json is missing, corrupt or refused
    │                                by its schema (run.deploy writes it, site.deployment reads)
    ├── ShardError                   a shard cannot be chosen or grouped     (bgmatrix.run.shards)
    │   └── MergeRefused             shard folders cannot be published; one line per problem
    ├── ReportError                  the inputs cannot make a site             (bgmatrix.site.model)
    ├── PublishError                 --publish without a site URL or commit (bgmatrix.site.cite)
    ├── DecisionInputError           a decision input is unreadable  (bgmatrix.site.decision)
    ├── RegressionError              candidates/regression.json is broken (bgmatrix.site.regression)
    ├── AttributionError             matrix/attribution.json is broken     (bgmatrix.run.attribute)
    ├── FidelityError                matrix/fidelity.json is missing, corrupt or refused by its
    │                                schema (run.fidelity writes it, site.fidelity reads it)
    └── ProbeError                   matrix/server-probes.json is missing, corrupt or refused by
                                     its schema (run.probe writes it, site.agreement reads it)

Classes are defined where they are raised (and stay importable there); the ones every layer
shares are defined here. This module is stdlib-only and imports nothing from bgmatrix, so any
module — including :mod:`bgmatrix.plan.store`, which nox imports — can use it.
"""

from __future__ import annotations

#: Exit codes of every ``bgmatrix`` verb besides its own 0/1 meaning.
USAGE_ERROR = 2
INTERRUPTED = 130


class BgmatrixError(Exception):
    """Base of every deliberate bgmatrix error. Its message is one line per problem (or a
    subclass sets ``problems``, a list of lines)."""


def problem_lines(exc: BgmatrixError) -> list[str]:
    """What the CLI prints for ``exc``: one clean line per problem, never an empty message."""
    given = getattr(exc, "problems", None)
    lines = [str(p) for p in given] if isinstance(given, list) else str(exc).splitlines()
    lines = [" ".join(line.split()) for line in lines]
    return [line for line in lines if line] or [type(exc).__name__]


class UsageError(BgmatrixError):
    """The command line names something that does not exist (a cell, tag, version, clause)."""


class Interrupted(BgmatrixError):
    """Ctrl-C reached a child process (uv, pytest) before Python saw it: exit 130, not 2."""


class PlanError(BgmatrixError):
    """A plan cannot be built, read or written (one-line message)."""


class PlanFileError(PlanError):
    """matrix/plan.json is missing, corrupt or of another schema."""


class FidelityError(BgmatrixError):
    """matrix/fidelity.json cannot be read or written (the runner writes it, the site reads
    it)."""


class ProbeError(BgmatrixError):
    """matrix/server-probes.json cannot be read (the runner writes it, the site reads it)."""


class DeployError(BgmatrixError):
    """matrix/deployment.json cannot be read or written (shared: the runner writes it, the site
    reads it)."""
