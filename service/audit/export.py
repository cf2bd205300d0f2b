"""Reading an export: which files, one NDJSON line or one Bundle as resources, and (for the local
engine) the offset index.

Both engines read the same files in the same order (`export_files`: the .ndjson and .json files
under PATH, sorted by their path within it) and read a line the same way (`owner_of_line`, orjson):
a line that is not JSON or not an object is reported as `file:line` and skipped, and a patient's
resources are handed to `audit_patient` in file order, so both engines give the same rows.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import orjson

from .patient import patient_of, unread

NO_PATIENT = "(no patient)"


def is_bulk_manifest(document: dict) -> bool:
    """The manifest a Bulk Data status request answers with (saved beside the NDJSON files as
    `manifest.json`, e.g.): `transactionTime` and `output`, no resourceType."""
    return "resourceType" not in document and "transactionTime" in document and isinstance(document.get("output"), list)


def _kind(name: str) -> str | None:
    return "ndjson" if name.endswith(".ndjson") else "json" if name.endswith(".json") else None


def _order(rel: str) -> tuple:
    return tuple(rel.split("/"))


def export_files(path: Path) -> list[tuple[str, Path, str]]:
    """(name within PATH, file, "ndjson" or "json") of what PATH holds, in the order both engines read it."""
    if path.is_dir():
        found = [(f.relative_to(path).as_posix(), f) for f in path.glob("**/*") if f.is_file()]
    else:
        found = [(path.name, path)]
    return sorted(((rel, f, _kind(f.name)) for rel, f in found if _kind(f.name)), key=lambda t: _order(t[0]))


def export_files_at(fs, root: str) -> list[tuple[str, str, str]]:
    """The same for a folder or file that fsspec reaches (`fs`, e.g. file:// or s3://): what Dask reads."""
    root = root.rstrip("/") or root
    if fs.isdir(root):
        found = [(p[len(root):].lstrip("/"), p) for p in fs.find(root)]
    else:
        found = [(root.rsplit("/", 1)[-1], root)]
    return sorted(((rel, p, _kind(rel)) for rel, p in found if _kind(rel)), key=lambda t: _order(t[0]))


def owner_of_line(line: bytes) -> tuple[str | None, str | None]:
    """(patient, None) for an NDJSON line that holds a resource, (None, error) for one that does not:
    "unparseable line", "not an object", or the type of what reading its patient raised."""
    try:
        resource = orjson.loads(line)
    except (orjson.JSONDecodeError, RecursionError):
        return None, "unparseable line"
    if not isinstance(resource, dict):
        return None, "not an object"
    return owner_of(resource)


def owner_of(resource: dict) -> tuple[str | None, str | None]:
    try:
        owner = patient_of(resource)
    except Exception as exc:  # noqa: BLE001 - e.g. a reference that is not a string
        return None, type(exc).__name__
    return (owner if isinstance(owner, str) and owner else NO_PATIENT), None


def bundle_resources(data: bytes) -> tuple[list[dict] | None, str | None]:
    """The resources of a .json file (a Bundle's entries, or one resource); [] for a Bulk Data manifest;
    (None, error) when it is not a JSON object."""
    try:
        document = orjson.loads(data)
    except (orjson.JSONDecodeError, RecursionError):
        return None, "unparseable line"
    if not isinstance(document, dict):
        return None, "not an object"
    if is_bulk_manifest(document):
        return [], None  # the export's manifest (its `output` lists the NDJSON files read here), not data
    entries = document.get("entry", []) if document.get("resourceType") == "Bundle" else [{"resource": document}]
    if not isinstance(entries, list):
        return None, "not an object"
    return [e.get("resource") if isinstance(e, dict) else None for e in entries], None


# ------------------------------------------------------------------ the local engine's index
def scan(path: Path) -> tuple[dict[str, list[tuple[str, int, int]]], int, list[dict]]:
    """Patient → [(file, offset, length)] of their resources (offset -1-n: a Bundle's entry n), the
    number of resources, and the lines that could not be read. Offsets only: each patient's
    resources are read again by the worker that audits them."""
    patients: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    count = 0
    bad: list[dict] = []
    for rel, file, kind in export_files(path):
        name = str(file)
        if kind == "ndjson":
            with open(file, "rb") as fh:
                offset = 0
                for number, line in enumerate(fh, 1):
                    if line.strip():
                        count += 1
                        owner, error = owner_of_line(line)
                        if error:
                            bad.append(unread(f"{rel}:{number}", "reading", error))
                        else:
                            patients[owner].append((name, offset, len(line)))
                    offset += len(line)
            continue
        resources, error = bundle_resources(file.read_bytes())
        if error:
            bad.append(unread(f"{rel}:1", "reading", error))
            continue
        for n, resource in enumerate(resources):
            if isinstance(resource, dict):
                count += 1
                owner, error = owner_of(resource)
                if error:
                    bad.append(unread(f"{rel}:1", "reading", error))
                else:
                    patients[owner].append((name, -1 - n, 0))
    return dict(patients), count, bad


def index(path: Path) -> tuple[dict[str, list[tuple[str, int, int]]], int]:
    """Patient → where their resources lie, and the number of resources (`scan` without the lines not read)."""
    patients, count, _ = scan(path)
    return patients, count


_FILES: dict[str, int] = {}  # file → descriptor, this process's (pread: no shared file position after a fork)
_FILES_PID = [0]


def _descriptor(file: str) -> int:
    if _FILES_PID[0] != os.getpid():
        _FILES.clear()  # a forked worker opens its own
        _FILES_PID[0] = os.getpid()
    fd = _FILES.get(file)
    if fd is None:
        if len(_FILES) >= 64:
            os.close(_FILES.pop(next(iter(_FILES))))
        fd = _FILES[file] = os.open(file, os.O_RDONLY)
    return fd


def read_resources(places: list[tuple[str, int, int]]) -> list[dict]:
    """A patient's resources, read back from where `scan` found them."""
    out, bundles = [], {}
    for file, offset, length in places:
        if offset >= 0:
            out.append(orjson.loads(os.pread(_descriptor(file), length, offset)))
        else:
            if file not in bundles:
                bundles = {file: bundle_resources(Path(file).read_bytes())[0]}  # one bundle held at a time
            out.append(bundles[file][-1 - offset])
    return out
