"""lbnb.archives: checked downloads (file:// URLs, no network) and safe extraction of synthetic archives."""
import hashlib
import io
import os
import random
import stat
import tarfile
import zipfile

import pytest

from lbnb.archives import ArchiveError, archive_kind, download, safe_extract, sha256_file, verify_sha256

FILES = {"a/b/one.txt": b"one\n", "a/two.bin": bytes(range(256)) * 10, "three.txt": b"three"}


def _tar(path, members, mode="w:gz"):
    """members: (name, kind, payload) with kind file/dir/sym/hard/chr/fifo; payload = data or link target."""
    with tarfile.open(path, mode) as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            data = None
            if kind == "file":
                info.size, data = len(payload), io.BytesIO(payload)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, payload
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, payload
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            tar.addfile(info, data)
    return path


def _zip(path, members):
    """members: (name, data) or (name, data, unix mode)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, *mode in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if mode:
                info.create_system = 3
                info.external_attr = mode[0] << 16
            zf.writestr(info, data)
    return path


def _files_under(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def _assert_nothing_escaped(tmp_path, target, archives):
    """Only the archives (and, when it existed, the empty target) are in tmp_path; no file anywhere else."""
    left = sorted(p.name for p in tmp_path.iterdir())
    expected = sorted([a.name for a in archives] + ([target.name] if target.exists() else []))
    assert left == expected
    assert not [p for p in tmp_path.rglob("*") if "evil" in p.name or "outside" in p.name or p.name == "x"]
    if target.exists():
        assert _files_under(target) == []


# ------------------------------------------------------------------------------------- checksums

def test_sha256_file_matches_hashlib(tmp_path):
    data = random.Random(0).randbytes(100_000)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", progress=False) == hashlib.sha256(data).hexdigest()


def test_verify_sha256(tmp_path):
    path = tmp_path / "f.tar"
    path.write_bytes(b"payload")
    digest = hashlib.sha256(b"payload").hexdigest()
    assert verify_sha256(path, digest.upper(), progress=False) == digest
    wrong = "0" * 64
    with pytest.raises(ArchiveError) as err:
        verify_sha256(path, wrong, progress=False)
    message = str(err.value)
    assert "\n" not in message and wrong in message and digest in message and "f.tar" in message
    with pytest.raises(ArchiveError):
        verify_sha256(tmp_path / "missing", digest, progress=False)


# -------------------------------------------------------------------------------------- download

@pytest.fixture
def served(tmp_path):
    src = tmp_path / "served" / "data.bin"
    src.parent.mkdir()
    src.write_bytes(random.Random(1).randbytes(50_000))
    return src, hashlib.sha256(src.read_bytes()).hexdigest()


def test_download_file_url(tmp_path, served):
    src, digest = served
    dest = tmp_path / "dl" / "data.bin"
    assert download(src.as_uri(), dest, expected_sha256=digest, progress=False) == dest
    assert dest.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["data.bin"]
    src.unlink()                                       # an existing, matching dest is not fetched again
    assert download(src.as_uri(), dest, expected_sha256=digest.upper(), progress=False) == dest


def test_download_replaces_stale_dest(tmp_path, served):
    src, digest = served
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"an old, different file")
    download(src.as_uri(), dest, expected_sha256=digest, progress=False)
    assert dest.read_bytes() == src.read_bytes()


def test_download_wrong_checksum_leaves_nothing(tmp_path, served):
    src, _ = served
    dest = tmp_path / "dl" / "data.bin"
    with pytest.raises(ArchiveError, match="checksum mismatch") as err:
        download(src.as_uri(), dest, expected_sha256="f" * 64, progress=False)
    assert "\n" not in str(err.value) and "download of" in str(err.value)
    assert list(dest.parent.iterdir()) == []


def test_download_missing_file(tmp_path):
    dest = tmp_path / "dl.bin"
    with pytest.raises(ArchiveError, match="download of .* failed"):
        download((tmp_path / "nope.bin").as_uri(), dest, progress=False)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ round trips

@pytest.mark.parametrize("mode, suffix", [("w:gz", ".tar.gz"), ("w:xz", ".tar.xz"), ("w", ".tar")])
def test_tar_round_trip(tmp_path, mode, suffix):
    members = [("a", "dir", None), ("a/b", "dir", None)] + [(n, "file", d) for n, d in FILES.items()]
    archive = _tar(tmp_path / f"x{suffix}", members, mode)
    assert archive_kind(archive) == "tar"
    target = tmp_path / "new" / "out"
    assert safe_extract(archive, target, progress=False) == len(FILES)
    assert _files_under(target) == sorted(FILES)
    for name, data in FILES.items():
        assert (target / name).read_bytes() == data


def test_zip_round_trip(tmp_path):
    archive = _zip(tmp_path / "x.zip", [("a/", b"")] + list(FILES.items()))
    assert archive_kind(archive) == "zip"
    target = tmp_path / "out"
    target.mkdir()                                     # an existing empty folder is fine
    assert safe_extract(archive, target, progress=False) == len(FILES)
    assert _files_under(target) == sorted(FILES)
    for name, data in FILES.items():
        assert (target / name).read_bytes() == data


def test_internal_links_accepted(tmp_path):
    archive = _tar(tmp_path / "x.tar", [
        ("a/b.txt", "file", b"bee"), ("a/link", "sym", "b.txt"), ("c/up", "sym", "../a/b.txt"),
        ("a/copy.txt", "hard", "a/b.txt")], "w")
    target = tmp_path / "out"
    assert safe_extract(archive, target, progress=False) == 2            # b.txt and the hard-link copy
    assert os.readlink(target / "a" / "link") == "b.txt"
    assert (target / "a" / "link").read_bytes() == b"bee"
    assert (target / "c" / "up").read_bytes() == b"bee"
    assert not (target / "a" / "copy.txt").is_symlink()
    assert (target / "a" / "copy.txt").read_bytes() == b"bee"


def test_dot_root_member_and_backslashes(tmp_path):
    archive = _tar(tmp_path / "x.tar", [(".", "dir", None), ("./d", "dir", None), ("./d/f.txt", "file", b"f")], "w")
    assert safe_extract(archive, tmp_path / "out", progress=False) == 1
    assert (tmp_path / "out" / "d" / "f.txt").read_bytes() == b"f"
    archive = _zip(tmp_path / "w.zip", [("dir\\f.txt", b"w")])
    assert safe_extract(archive, tmp_path / "out2", progress=False) == 1
    assert (tmp_path / "out2" / "dir" / "f.txt").read_bytes() == b"w"


# --------------------------------------------------------------------------------- refused members

BENIGN = [("ok/first.txt", "file", b"written before the bad member in a naive extractor")]
BAD_TARS = {
    "dotdot": [("../evil.txt", "file", b"evil")],
    "dotdot-backslash": [("ok\\..\\..\\evil.txt", "file", b"evil")],
    "absolute": [("/abs_evil.txt", "file", b"evil")],
    "drive": [("C:/evil.txt", "file", b"evil")],
    "symlink-escape": [("link", "sym", "../../outside")],
    "symlink-absolute": [("link", "sym", "/tmp/outside")],
    "symlink-chain": [("s", "sym", "."), ("link", "sym", "s/../outside")],
    "symlink-loop": [("p", "sym", "q"), ("q", "sym", "p")],
    "hardlink-escape": [("hl", "hard", "../x")],
    "hardlink-absolute": [("hl", "hard", "/etc/passwd")],
    "hardlink-unknown": [("hl", "hard", "nothing.txt")],
    "char-device": [("dev", "chr", None)],
    "fifo": [("fifo", "fifo", None)],
    "below-symlink": [("d", "sym", "ok"), ("d/evil.txt", "file", b"evil")],
    "below-escaping-symlink": [("d", "sym", "../.."), ("d/evil.txt", "file", b"evil")],
    "duplicate": [("ok/first.txt", "file", b"again")],
}


@pytest.mark.parametrize("case", BAD_TARS)
def test_bad_tar_refused(tmp_path, case):
    archive = _tar(tmp_path / "bad.tar.gz", BENIGN + BAD_TARS[case])
    target = tmp_path / "a" / "b"                      # deep, so that "../.." lands in tmp_path
    with pytest.raises(ArchiveError, match="refused") as err:
        safe_extract(archive, target, progress=False)
    assert "\n" not in str(err.value)
    assert not target.exists() and not (tmp_path / "a").exists()
    _assert_nothing_escaped(tmp_path, target, [archive])


BAD_ZIPS = {
    "dotdot": [("../evil.txt", b"evil")],
    "absolute": [("/abs_evil.txt", b"evil")],
    "backslash-absolute": [("\\evil.txt", b"evil")],
    "drive": [("C:\\evil.txt", b"evil")],
    "symlink-escape": [("link", b"../../outside", stat.S_IFLNK | 0o777)],
    "symlink-absolute": [("link", b"/etc/passwd", stat.S_IFLNK | 0o777)],
    "fifo": [("fifo", b"", stat.S_IFIFO | 0o644)],
    "char-device": [("dev", b"", stat.S_IFCHR | 0o644)],
    "below-symlink": [("d", b"ok", stat.S_IFLNK | 0o777), ("d/evil.txt", b"evil")],
}


@pytest.mark.parametrize("case", BAD_ZIPS)
def test_bad_zip_refused(tmp_path, case):
    archive = _zip(tmp_path / "bad.zip", [("ok/first.txt", b"first")] + BAD_ZIPS[case])
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(ArchiveError, match="refused"):
        safe_extract(archive, target, progress=False)
    assert list(target.iterdir()) == []
    _assert_nothing_escaped(tmp_path, target, [archive])


def test_zip_internal_symlink_accepted(tmp_path):
    archive = _zip(tmp_path / "x.zip", [("a/b.txt", b"bee"), ("a/link", b"b.txt", stat.S_IFLNK | 0o777)])
    assert safe_extract(archive, tmp_path / "out", progress=False) == 1
    assert os.readlink(tmp_path / "out" / "a" / "link") == "b.txt"


# ------------------------------------------------------------------------------ corrupt archives

def _payload(n=200_000):
    return random.Random(2).randbytes(n)                # incompressible, so a cut lands in member data


@pytest.mark.parametrize("kind", ["tar.xz", "tar", "zip"])
def test_truncated_archive(tmp_path, kind):
    if kind == "zip":
        archive = _zip(tmp_path / "x.zip", [("first.bin", _payload()), ("last.bin", _payload())])
        cut = archive.stat().st_size // 2
    else:
        members = [("first.bin", "file", _payload()), ("last.bin", "file", _payload())]
        archive = _tar(tmp_path / f"x.{kind}", members, "w:xz" if kind == "tar.xz" else "w")
        # plain tar: header, 200_000 bytes padded to 200_192, header, then cut 100_000 bytes into last.bin
        cut = archive.stat().st_size // 2 if kind == "tar.xz" else 512 + 200_192 + 512 + 100_000
    archive.write_bytes(archive.read_bytes()[:cut])
    target = tmp_path / "out"
    with pytest.raises(ArchiveError, match="truncated or corrupt") as err:
        safe_extract(archive, target, progress=False)
    assert "\n" not in str(err.value)
    assert not target.exists()
    _assert_nothing_escaped(tmp_path, target, [archive])


@pytest.mark.parametrize("mode", ["w:gz", "w:xz", "w:bz2"])
def test_flipped_byte_in_compressed_tar_caught_before_writing(tmp_path, mode):
    """Incompressible data is stored verbatim: only the stream's own checksum notices the flip."""
    archive = _tar(tmp_path / "x.tar.c", [("a.bin", "file", _payload(50_000)), ("b.bin", "file", b"b")], mode)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(ArchiveError, match="truncated or corrupt"):
        safe_extract(archive, target, progress=False)
    assert list(target.iterdir()) == []


def test_corrupt_after_writing_started_empties_existing_target(tmp_path):
    with zipfile.ZipFile(tmp_path / "x.zip", "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a/first.bin", b"x" * 1000)
        zf.writestr("b/last.bin", b"y" * 1000)
    data = bytearray((tmp_path / "x.zip").read_bytes())
    data[data.index(b"y" * 1000)] = ord("z")
    (tmp_path / "x.zip").write_bytes(bytes(data))
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(ArchiveError, match="Bad CRC-32"):
        safe_extract(tmp_path / "x.zip", target, progress=False)
    assert target.is_dir() and list(target.iterdir()) == []


def test_non_empty_target_refused(tmp_path):
    archive = _zip(tmp_path / "x.zip", list(FILES.items()))
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(ArchiveError, match="not empty"):
        safe_extract(archive, target, progress=False)
    assert _files_under(target) == ["keep.txt"]


def test_non_archive_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("just text\n" * 100)
    with pytest.raises(ArchiveError, match="neither a tar nor a zip"):
        archive_kind(path)
    with pytest.raises(ArchiveError, match="neither a tar nor a zip"):
        safe_extract(path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ArchiveError):
        archive_kind(tmp_path / "missing.tar")
