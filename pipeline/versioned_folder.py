"""A folder that is replaced whole and is never missing, and the crash leftovers of writing files and folders.

`<parent>/<name>` is a symbolic link to one version of the folder, `<parent>/.<name>.versions/<version>/`. A
replace writes the new version in a staging folder beside the versions, renames it into a version, and points a
fresh link at it with one rename over the old link (`os.replace` of a link is atomic on POSIX): a reader sees the
old content or the new, never none and never half. A reader that resolves the link once (`Path.resolve()`) reads one
version throughout; the previous version stays until the next replace starts.

Every replace starts by removing what a crash may have left: staging folders, links not yet renamed into place,
versions other than the current one, and the `.<name>.<random>.old` / `.tmp` folders of the earlier move-aside
replace. A plain folder at `<name>` (written before versions) becomes a version by one rename, the one moment the
name is missing, once.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_STAGING_PREFIX = ".staging-"


def versions_dir(target: str | Path) -> Path:
    """Where the versions of `target` live: the hidden sibling `.<name>.versions/`."""
    target = Path(target)
    return target.parent / f".{target.name}.versions"


@contextmanager
def replacing(target: str | Path) -> Iterator[Path]:
    """An empty staging folder for the new content of `target`. Leaving the block without an error makes it
    `target`'s content in one rename; an error removes it and leaves `target` as it was."""
    target = Path(target)
    clean_leftovers(target)
    versions = versions_dir(target)
    versions.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=versions))
    staging.chmod(0o755)  # mkdtemp's folder is private to this user; what is published is meant to be read
    try:
        yield staging
        _publish(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _new_name() -> str:
    # Sortable by age, unique across processes.
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


def _publish(staging: Path, target: Path) -> None:
    versions = versions_dir(target)
    version = versions / _new_name()
    os.rename(staging, version)
    link = target.parent / f".{target.name}.{uuid.uuid4().hex}.link"
    os.symlink(Path(versions.name) / version.name, link)  # relative: the lake can be moved or mounted elsewhere
    try:
        if target.is_dir() and not target.is_symlink():
            os.rename(target, versions / f"{_new_name()}-plain")
        os.replace(link, target)
    finally:
        if link.is_symlink():
            link.unlink()


def clean_leftovers(target: str | Path) -> list[Path]:
    """Remove what a crashed replace of `target` left (see the module docstring); returns what was removed."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    removed = []
    leftover = re.compile(rf"^\.{re.escape(target.name)}\.[0-9A-Za-z_]+\.(old|tmp|link)$")
    removed += [p for p in target.parent.iterdir() if leftover.match(p.name)]
    versions = versions_dir(target)
    current = target.resolve().name if target.is_symlink() else None
    if versions.is_dir():
        removed += [p for p in versions.iterdir() if p.name != current]
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return removed


def clean_stale_files(folder: str | Path, pattern: str, older_than_s: float) -> list[Path]:
    """Remove the files under `folder` (any depth) matching `pattern` last written more than `older_than_s` seconds
    ago: temporary files a crashed writer left, old enough that no running writer still owns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    cutoff = time.time() - older_than_s
    stale = [p for p in folder.rglob(pattern) if p.is_file() and p.stat().st_mtime < cutoff]
    for path in stale:
        path.unlink()
    return stale
