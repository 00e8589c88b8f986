"""Bundles on disk: what the CLI leaves out, and every way a hostile archive is refused."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest

from papayya import bundles
from papayya.bundles import InvalidBundle, Limits
from papayya.errors import PayloadTooLarge

AGENT = "from papayya import agent\n\n@agent\ndef hello():\n    return 'hi'\n"


def tar_gz(path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


def test_a_plain_bundle_is_accepted(tmp_path: Path) -> None:
    path = tar_gz(
        tmp_path / "b.tar.gz",
        file("./agent.py", AGENT.encode()),
        file("lib/util.py"),
        link("lib/alias.py", "util.py"),
        link("lib/same.py", "lib/util.py", tarfile.LNKTYPE),
    )
    manifest = bundles.inspect_bundle(path)
    assert manifest.files == {"agent.py": len(AGENT), "lib/util.py": 1}
    names = [info.name for info, _ in bundles.members(path)]
    assert names == ["agent.py", "lib/util.py", "lib/alias.py", "lib/same.py"]
    assert bundles.read_member(path, "agent.py") == AGENT.encode()


HOSTILE: dict[str, Callable[[], list[tuple[tarfile.TarInfo, bytes | None]]]] = {
    "dotdot": lambda: [file("agent.py"), file("../escape.py")],
    "nested dotdot": lambda: [file("a/../../etc/cron.d/x")],
    "absolute": lambda: [file("/etc/passwd")],
    "symlink to /etc": lambda: [file("agent.py"), link("passwd", "/etc/passwd")],
    "symlink up": lambda: [file("agent.py"), link("a/up", "../../outside")],
    "symlink through a symlink": lambda: [
        file("agent.py"),
        link("a/b", ".."),
        link("x", "a/b/.."),
    ],
    "hardlink outside": lambda: [file("agent.py"), link("h", "../../etc/shadow", tarfile.LNKTYPE)],
    "hardlink to absolute": lambda: [file("agent.py"), link("h", "/etc/shadow", tarfile.LNKTYPE)],
    "char device": lambda: [file("agent.py"), special("dev/null", tarfile.CHRTYPE)],
    "block device": lambda: [file("agent.py"), special("dev/sda", tarfile.BLKTYPE)],
    "fifo": lambda: [file("agent.py"), special("pipe", tarfile.FIFOTYPE)],
    "backslash": lambda: [file("..\\..\\evil.py")],
    "empty": lambda: [],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_members_are_refused(tmp_path: Path, case: str) -> None:
    path = tar_gz(tmp_path / "b.tar.gz", *HOSTILE[case]())
    with pytest.raises(InvalidBundle):
        bundles.inspect_bundle(path)


def test_oversize_members_and_totals_are_refused(tmp_path: Path) -> None:
    big = tar_gz(tmp_path / "big.tar.gz", file("agent.py"), file("data.bin", b"\0" * 5000))
    with pytest.raises(InvalidBundle, match=r"data\.bin"):
        bundles.inspect_bundle(big, Limits(member_bytes=4096))
    many = tar_gz(tmp_path / "many.tar.gz", *(file(f"f{i}.py", b"\0" * 1000) for i in range(10)))
    with pytest.raises(InvalidBundle, match="unpacks to more"):
        bundles.inspect_bundle(many, Limits(total_bytes=5000))
    with pytest.raises(InvalidBundle, match="members"):
        bundles.inspect_bundle(many, Limits(members=5))
    with pytest.raises(PayloadTooLarge):
        bundles.inspect_bundle(many, Limits(bundle_bytes=10))


def test_a_member_that_lies_about_its_size_is_caught(tmp_path: Path) -> None:
    """A header claiming a huge size over a little data: a gzip bomb's cousin."""
    info = tarfile.TarInfo("agent.py")
    info.size = 10**9
    raw = io.BytesIO()
    raw.write(info.tobuf(format=tarfile.PAX_FORMAT))
    raw.write(b"x" * 1024)
    path = tmp_path / "liar.tar.gz"
    path.write_bytes(gzip.compress(raw.getvalue()))
    with pytest.raises(InvalidBundle):
        bundles.inspect_bundle(path)


@pytest.mark.parametrize(
    "content",
    [b"not a tarball at all", b"PK\x03\x04zip", b"", gzip.compress(b"plain text, not a tar")],
)
def test_corrupt_archives_are_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.tar.gz"
    path.write_bytes(content)
    with pytest.raises(InvalidBundle):
        bundles.inspect_bundle(path)


def test_a_truncated_archive_is_refused(tmp_path: Path) -> None:
    good = tar_gz(tmp_path / "good.tar.gz", file("agent.py", AGENT.encode() * 200))
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InvalidBundle):
        bundles.inspect_bundle(cut)


def make_project(root: Path) -> None:
    for rel in (
        "agent.py", "lib/tools.py", "requirements.txt", ".env", ".env.local", "notes.pyc",
        ".git/config", ".venv/bin/python", "venv/lib/x.py", "__pycache__/agent.cpython-311.pyc",
        "node_modules/x/index.js", "build/out.bin", "dist/pkg.whl", "pkg.egg-info/PKG-INFO",
        ".pytest_cache/v", "data/.keep",
    ):  # fmt: skip
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
    (root / "outside-link.py").symlink_to("/etc/hostname")


def test_collect_leaves_out_vcs_venvs_caches_secrets_and_outputs(tmp_path: Path) -> None:
    make_project(tmp_path)
    names = [rel.as_posix() for rel, _ in bundles.collect(tmp_path)]
    assert names == ["agent.py", "data/.keep", "lib/tools.py", "requirements.txt"]


def test_make_bundle_is_reproducible_and_passes_inspection(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_project(src)
    files = bundles.collect(src)
    seen: list[int] = []
    first = bundles.make_bundle(files, tmp_path / "a.tar.gz", progress=seen.append)
    second = bundles.make_bundle(files, tmp_path / "b.tar.gz")
    assert first == second == bundles.sha256_of(tmp_path / "a.tar.gz")
    assert sum(seen) == sum(path.stat().st_size for _, path in files)
    manifest = bundles.inspect_bundle(tmp_path / "a.tar.gz")
    assert set(manifest.files) == {rel.as_posix() for rel, _ in files}


def test_make_bundle_stops_at_the_size_limit(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "blob.bin").write_bytes(os.urandom(200_000))  # incompressible
    files = bundles.collect(tmp_path / "src")
    with pytest.raises(PayloadTooLarge):
        bundles.make_bundle(files, tmp_path / "a.tar.gz", limit=10_000)


def test_extract_unpacks_a_vetted_bundle(tmp_path: Path) -> None:
    path = tar_gz(tmp_path / "b.tar.gz", file("agent.py", b"a"), link("alias.py", "agent.py"))
    bundles.extract(path, tmp_path / "out")
    assert (tmp_path / "out" / "alias.py").read_text() == "a"
    assert PurePosixPath("agent.py") in {r for r, _ in bundles.collect(tmp_path / "out")}
