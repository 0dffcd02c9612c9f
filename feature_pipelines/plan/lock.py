"""The committed definitions lock (`features.lock.json`) and the declared breaking changes
(`features.breaking.toml`), both at the repository root and reviewed like code.

The lock holds each view's record as last accepted; `plan --check` compares the working tree with
it, and `plan --update-lock` rewrites it once every breaking change is declared. A declaration
names the feature ("view:feature", or a whole view as "view"), the fingerprint of the view in the
lock it breaks from (`from`), who declares it and why. Once the lock moves past that fingerprint
the declaration matches nothing again, so it stays in the file as a record and cannot excuse a
later change.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from feature_pipelines.plan.record import ViewRecord
from feature_pipelines.settings import REPO_ROOT

LOCK_PATH = REPO_ROOT / "features.lock.json"
DECLARATIONS_PATH = REPO_ROOT / "features.breaking.toml"
LOCK_FORMAT = 1
LOCK_ABOUT = (
    "Feature definitions as last accepted. `feature-pipelines plan --check` (run by the test suite) fails when the "
    "working tree differs from them; `feature-pipelines plan --update-lock` rewrites this file, and refuses while a "
    "breaking change is not declared in features.breaking.toml."
)


class LockFileError(ValueError):
    """A lock or declarations file that cannot be read as one."""


def read_lock(path: Path = LOCK_PATH) -> dict[str, ViewRecord]:
    """The locked records by view name."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise LockFileError(f"{path}: no lock file; create it with `feature-pipelines plan --update-lock`") from error
    except json.JSONDecodeError as error:
        raise LockFileError(f"{path}: not JSON ({error})") from error
    if data.get("format") != LOCK_FORMAT:
        raise LockFileError(f"{path}: lock format {data.get('format')!r}, this code reads format {LOCK_FORMAT}")
    return {name: ViewRecord.from_json(view, where=f"{path} view {name!r}") for name, view in data["views"].items()}


def write_lock(records: Mapping[str, ViewRecord], path: Path = LOCK_PATH) -> None:
    """The lock with `records`, views sorted by name (a stable file gives a readable diff)."""
    data = {"about": LOCK_ABOUT, "format": LOCK_FORMAT,
            "views": {name: records[name].to_json() for name in sorted(records)}}
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class Declaration:
    """One declared breaking change."""

    subject: str  # "view:feature" or "view"
    from_fingerprint: str
    reason: str
    declared_by: str

    def covers(self, reference: str, fingerprint: str) -> bool:
        view = reference.partition(":")[0]
        return self.from_fingerprint == fingerprint and self.subject in (reference, view)


def read_declarations(path: Path = DECLARATIONS_PATH) -> list[Declaration]:
    """Every `[[breaking]]` entry; a missing file declares nothing."""
    if not path.exists():
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise LockFileError(f"{path}: not TOML ({error})") from error
    out = []
    for index, entry in enumerate(data.get("breaking", []), start=1):
        missing = [key for key in ("feature", "from", "reason", "declared_by") if not str(entry.get(key, "")).strip()]
        if missing:
            raise LockFileError(f"{path}: [[breaking]] entry {index} lacks {missing} (each needs feature, from, reason, declared_by)")
        out.append(Declaration(entry["feature"], entry["from"], entry["reason"], entry["declared_by"]))
    return out


def declaration_text(subject: str, fingerprint: str) -> str:
    """The entry to paste into the declarations file for one breaking change."""
    return (f'[[breaking]]\nfeature = "{subject}"\nfrom = "{fingerprint}"\n'
            'reason = "<why it is worth breaking, and what readers must do>"\ndeclared_by = "<owner>"\n')


def is_declared(declarations: Sequence[Declaration], reference: str, fingerprint: str) -> bool:
    return any(d.covers(reference, fingerprint) for d in declarations)
