"""Deployment bundles: the tar.gz of an agent's directory that ``papayya deploy`` uploads.

The CLI side (``collect``, ``make_bundle``) leaves out what never belongs in an image
(``.git``, virtualenvs, caches, ``.env`` files, build outputs) and refuses a bundle over the
size limit. The server side (``inspect_bundle``) trusts nothing: a member may be written by
anyone with an API key, so every path, link, type and size is checked before the bundle is
stored, and a bundle is read only through the members it vetted (``members``).
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import os
import shutil
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Final

from papayya.errors import InvalidInput, PayloadTooLarge

MAX_BUNDLE_BYTES: Final = 50 * 1024 * 1024  # compressed, as uploaded
MAX_MEMBER_BYTES: Final = 50 * 1024 * 1024
MAX_TOTAL_BYTES: Final = 200 * 1024 * 1024  # unpacked: a gzip bomb stops here
MAX_MEMBERS: Final = 20_000
# How long and deep a member's path may be: well inside PATH_MAX and NAME_MAX, so unpacking
# it (process runtime, image build) cannot fail half-way on a name the kernel refuses.
MAX_PATH_BYTES: Final = 1024
MAX_PATH_PARTS: Final = 64
MAX_PART_BYTES: Final = 255
# Directory names never bundled, at any depth.
EXCLUDED_DIRS: Final = frozenset({
    ".git", ".hg", ".svn", ".venv", "venv", "env", ".env", "__pycache__", ".mypy_cache",
    ".pytest_cache", ".ruff_cache", ".tox", ".nox", ".hypothesis", "node_modules", "build",
    "dist", ".papayya", ".idea", ".vscode", ".eggs",
})  # fmt: skip
# File name patterns never bundled: secrets and compiled or packaged leftovers.
EXCLUDED_FILES: Final = (
    ".env", ".env.*", "*.pyc", "*.pyo", "*.egg-info", ".DS_Store", "*.whl", "*.tar.gz",
)  # fmt: skip


class InvalidBundle(InvalidInput):
    """The bundle is not a safe, readable tar.gz of an agent."""

    code = "invalid_bundle"


@dataclass(frozen=True)
class Limits:
    bundle_bytes: int = MAX_BUNDLE_BYTES
    member_bytes: int = MAX_MEMBER_BYTES
    total_bytes: int = MAX_TOTAL_BYTES
    members: int = MAX_MEMBERS


@dataclass(frozen=True)
class Manifest:
    """What a vetted bundle holds: regular files with their sizes, and its totals."""

    files: dict[str, int] = field(default_factory=dict)
    total_bytes: int = 0
    members: int = 0


# -- the CLI side ---------------------------------------------------------------------------


def excluded(rel: PurePosixPath, is_dir: bool) -> bool:
    if is_dir:
        return rel.name in EXCLUDED_DIRS or rel.name.endswith(".egg-info")
    return any(fnmatch.fnmatch(rel.name, pattern) for pattern in EXCLUDED_FILES)


def collect(root: Path) -> list[tuple[PurePosixPath, Path]]:
    """The files of ``root`` to bundle, sorted, as (path in the bundle, path on disk).
    Symlinks are followed only if they stay inside ``root``."""
    root = root.resolve()
    found: list[tuple[PurePosixPath, Path]] = []
    for current, dirs, files in os.walk(root):
        base = Path(current)
        rel_base = PurePosixPath(base.relative_to(root).as_posix())
        dirs[:] = sorted(d for d in dirs if not excluded(rel_base / d, True))
        for name in sorted(files):
            rel = rel_base / name
            path = base / name
            if excluded(rel, False) or not path.resolve().is_relative_to(root):
                continue
            if path.is_file():
                found.append((PurePosixPath(os.path.normpath(rel)), path))
    return sorted(found)


def make_bundle(
    files: list[tuple[PurePosixPath, Path]],
    target: Path,
    limit: int = MAX_BUNDLE_BYTES,
    progress: Callable[[int], None] | None = None,
) -> str:
    """Write ``files`` (from ``collect``) to ``target`` as a tar.gz; its SHA-256. Entries are
    normalized (owner root, mode 0644/0755, mtime 0): the same files make the same bundle."""
    too_large = f"the bundle is larger than {limit // (1024 * 1024)} MiB; leave out data files"
    with target.open("wb") as raw:
        # No name nor time in the gzip header: the hash depends on the content alone.
        with (
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for rel, path in files:
                info = tarfile.TarInfo(rel.as_posix())
                info.size = path.stat().st_size
                info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
                with path.open("rb") as f:
                    tar.addfile(info, f)
                if raw.tell() > limit:
                    raise PayloadTooLarge(too_large)
                if progress is not None:
                    progress(info.size)
    if target.stat().st_size > limit:
        raise PayloadTooLarge(too_large)
    return sha256_of(target)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


# -- the server side ------------------------------------------------------------------------


def _clean_name(name: str) -> str:
    """A member name as a relative POSIX path inside the bundle; refuses any other."""
    if not name or "\x00" in name or "\\" in name:
        raise InvalidBundle(f"bundle member {name!r} has an unusable name")
    path = PurePosixPath(name)
    if path.is_absolute():
        raise InvalidBundle(f"bundle member {name!r} is an absolute path")
    if ".." in path.parts:
        raise InvalidBundle(f"bundle member {name!r} points outside the bundle (..)")
    parts = [p for p in path.parts if p != "."]
    if not parts:
        return "."
    clean = "/".join(parts)
    if len(clean.encode(errors="surrogateescape")) > MAX_PATH_BYTES:
        raise InvalidBundle(f"bundle member {clean[:80]!r}… is longer than {MAX_PATH_BYTES} bytes")
    if len(parts) > MAX_PATH_PARTS:
        raise InvalidBundle(f"bundle member {clean[:80]!r}… is more than {MAX_PATH_PARTS} deep")
    if any(len(p.encode(errors="surrogateescape")) > MAX_PART_BYTES for p in parts):
        raise InvalidBundle(f"bundle member {clean[:80]!r} has a name over {MAX_PART_BYTES} bytes")
    return clean


def _escapes(links: dict[str, str], name: str) -> bool:
    """Does the symlink ``name`` lead outside the bundle, following the bundle's other links
    as the kernel would (a link to ``a/b/..`` escapes if ``a/b`` is a link to ``..``)?"""
    parts = [*PurePosixPath(name).parent.parts, *PurePosixPath(links[name]).parts]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "/":
            return True
        if part == "..":
            if not resolved:
                return True
            resolved.pop()
            continue
        candidate = "/".join([*resolved, part])
        if candidate in links:
            hops += 1
            if hops > 40:
                return True  # a loop: as good as outside
            parts = [*PurePosixPath(links[candidate]).parts, *parts]
            continue
        resolved.append(part)
    return False


def _check_member(member: tarfile.TarInfo, name: str, limits: Limits) -> None:
    if member.isfile():
        if member.size > limits.member_bytes:
            raise InvalidBundle(
                f"bundle member {name!r} is {member.size} bytes; the limit is {limits.member_bytes}"
            )
    elif member.issym():
        # Where it leads is checked once all links are known (_escapes).
        if len(member.linkname.encode(errors="surrogateescape")) > MAX_PATH_BYTES:
            raise InvalidBundle(f"bundle member {name!r} links to a path that is too long")
    elif member.islnk():
        target = member.linkname
        if PurePosixPath(target).is_absolute() or ".." in PurePosixPath(target).parts:
            raise InvalidBundle(f"bundle member {name!r} links to {target!r}, outside the bundle")
    elif not member.isdir():
        kind = "device" if member.isdev() else "special file"
        raise InvalidBundle(f"bundle member {name!r} is a {kind}; only files and directories")


def inspect_bundle(path: Path, limits: Limits = Limits()) -> Manifest:
    """Check every member of the tar.gz at ``path``; what it holds, or ``InvalidBundle``."""
    size = path.stat().st_size
    if size > limits.bundle_bytes:
        raise PayloadTooLarge(f"the bundle is {size} bytes; the limit is {limits.bundle_bytes}")
    files: dict[str, int] = {}
    links: dict[str, str] = {}
    total = count = 0
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for member in tar:
                count += 1
                if count > limits.members:
                    raise InvalidBundle(f"the bundle has more than {limits.members} members")
                name = _clean_name(member.name)
                _check_member(member, name, limits)
                if member.islnk() and _clean_name(member.linkname) not in files:
                    raise InvalidBundle(f"bundle member {name!r} links to a missing file")
                if member.isfile():
                    total += member.size
                    if total > limits.total_bytes:
                        raise InvalidBundle(
                            f"the bundle unpacks to more than {limits.total_bytes} bytes"
                        )
                    files[name] = member.size
                    _drain(tar, member)
                elif member.issym():
                    links[name] = member.linkname
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise InvalidBundle(f"the bundle is not a readable tar.gz: {exc}") from None
    for name, target in links.items():
        if _escapes(links, name):
            raise InvalidBundle(f"bundle member {name!r} links to {target!r}, outside the bundle")
    if not files:
        raise InvalidBundle("the bundle holds no files")
    return Manifest(files, total, count)


def _drain(tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
    """Read a file's data, so a truncated or corrupt archive fails here, not in a build."""
    stream = tar.extractfile(member)
    assert stream is not None
    while stream.read(1024 * 1024):
        pass


def members(path: Path) -> Iterator[tuple[tarfile.TarInfo, io.BufferedReader | None]]:
    """The members of a bundle that ``inspect_bundle`` accepted, with clean names, root
    ownership and plain permissions, each with its content (files only)."""
    with tarfile.open(path, mode="r:gz") as tar:
        for member in tar:
            name = _clean_name(member.name)
            if name == ".":
                continue
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if member.isfile():
                info.size = member.size
                info.mode = 0o755 if member.mode & 0o111 else 0o644
                yield info, tar.extractfile(member)  # type: ignore[misc]
                continue
            if member.isdir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif member.issym():
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, member.linkname, 0o777
            elif member.islnk():
                info.type, info.linkname = tarfile.LNKTYPE, _clean_name(member.linkname)
                info.mode = 0o644
            else:
                continue
            yield info, None


def read_member(path: Path, name: str, limit: int = 1024 * 1024) -> bytes:
    """The content of one regular file of a vetted bundle (``requirements.txt``, say)."""
    for info, stream in members(path):
        if info.name == name and stream is not None:
            data = stream.read(limit + 1)
            if len(data) > limit:
                raise InvalidBundle(f"{name} is larger than {limit} bytes")
            return data
    raise InvalidBundle(f"the bundle has no file {name}")


def extract(path: Path, target: Path) -> None:
    """Unpack a bundle that ``inspect_bundle`` accepted into the directory ``target`` (for the
    ``process`` runtime). tarfile's ``data`` filter checks each path and link once more."""
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            tar.extractall(target, filter="data")
    except BaseException:
        if created:  # a half-unpacked bundle is of no use to anyone: leave nothing behind
            shutil.rmtree(target, ignore_errors=True)
        raise
