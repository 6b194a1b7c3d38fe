"""Download and unpack public dataset archives (MVTec AD ``.tar.xz``, VisA ``.tar``, Real-IAD ``.zip``) safely.

Downloads (:func:`download`) go to ``<dest>.part`` next to ``dest`` and are renamed into place only
after the transfer finished and the SHA-256 matched, so ``dest`` is either absent or complete; a
failed download leaves no ``.part`` file behind.

Extraction (:func:`safe_extract`) trusts nothing in the archive. Every member is checked *before*
anything is written, and one bad member refuses the whole archive (:class:`ArchiveError` naming the
member and the rule):

* names must be relative: no leading ``/`` or ``\\``, no drive letter (``C:``), no ``..`` component
  (``\\`` counts as a separator too), not empty; a name may appear only once (directories excepted);
* only regular files, directories, symbolic links and (tar) hard links are accepted: device files,
  FIFOs, sockets and anything else are refused; so are encrypted zip entries;
* a symbolic link must point inside the target: its target is resolved from the link's own folder,
  following the other links of the archive (a link loop is refused); absolute targets are refused;
* a tar hard link must name an earlier regular file of the archive (resolved from the archive root);
* no member may lie below a link or a file of the archive (``a -> /etc`` then ``a/passwd`` is refused
  even when ``a`` alone would be harmless).

Writing creates directories and regular files with the default permissions (the umask), plus the
accepted symbolic links; modes, owners and times recorded in the archive are never applied. Link
policy: a tar hard link is written as a *copy* of the file it names (counted as a written file); a
symbolic link is created last, after every file, as a relative link to where it resolves (inside the
target by the checks above; not counted).

A compressed tar is read to the end of its stream during validation, so the compression's own
integrity check (gzip CRC-32, xz check, bzip2 CRCs) catches corrupt data before anything is written;
a zip entry's CRC-32 is checked as it is written (a mismatch removes everything again); a plain tar
has no checksum over its data. A truncated or corrupt archive raises
``ArchiveError("<name> is truncated or corrupt: <detail>")``. On any error after writing started,
everything written is removed again: a target folder that :func:`safe_extract` created (with any
missing parents) is deleted, one that existed (it must be empty) is emptied.

Validation reads the whole archive once before the extraction reads it again: for a compressed tar
this costs a second decompression, the price of never writing anything from a bad archive.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import lzma
import os
import posixpath
import re
import shutil
import stat
import struct
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

CHUNK = 8 * 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
_MAX_LINK_HOPS = 40          # like the kernel's ELOOP limit
_MAX_ZIP_LINK_BYTES = 4096   # a zip symlink's content is its target path
_USER_AGENT = "lbnb-archives/1 (python urllib)"
_COMPRESSED = {b"\xfd7zXZ\x00": "xz", b"\x1f\x8b": "gzip", b"BZh": "bzip2"}


class ArchiveError(Exception):
    """Any failure with a one-line, human-readable reason (message never spans lines)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def _detail(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, urllib.error.HTTPError):
        text = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        text = str(exc.reason)
    return " ".join(text.split())


# --------------------------------------------------------------------------------------- checksums

def _hash_stream(stream, sha, bar, out=None) -> int:
    n = 0
    while chunk := stream.read(CHUNK):
        sha.update(chunk)
        if out is not None:
            out.write(chunk)
        n += len(chunk)
        bar.update(len(chunk))
    return n


def sha256_file(path, *, progress: bool = True) -> str:
    """Lowercase hex SHA-256 of a file, read in 8 MiB chunks (a byte progress bar when ``progress``)."""
    path = Path(path)
    sha = hashlib.sha256()
    try:
        with open(path, "rb") as f, tqdm(total=os.fstat(f.fileno()).st_size, unit="B", unit_scale=True,
                                         desc=f"sha256 {path.name}", disable=not progress, leave=False) as bar:
            _hash_stream(f, sha, bar)
    except OSError as exc:
        raise ArchiveError(f"cannot read {path}: {_detail(exc)}") from exc
    return sha.hexdigest()


def _mismatch(name: str, expected: str, actual: str) -> str:
    return f"checksum mismatch for {name}: expected {expected.strip().lower()}, got {actual}"


def verify_sha256(path, expected: str, *, progress: bool = True) -> str:
    """The file's SHA-256, checked (case-insensitively) against ``expected``; ArchiveError on mismatch."""
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"cannot verify {path}: no such file")
    actual = sha256_file(path, progress=progress)
    if actual != expected.strip().lower():
        raise ArchiveError(_mismatch(path.name, expected, actual))
    return actual


# ---------------------------------------------------------------------------------------- download

def download(url: str, dest, *, expected_sha256: str | None = None, progress: bool = True) -> Path:
    """Download ``url`` (http(s), ftp or file) to ``dest`` via ``dest.part``, checked, renamed into place.

    An existing ``dest`` is kept when it matches ``expected_sha256`` (and re-downloaded when it does
    not); without a checksum an existing ``dest`` is kept as is, since downloads only ever rename
    complete files into place. Any failure removes the ``.part`` file and raises ArchiveError.
    """
    dest = Path(dest)
    if dest.is_file():
        if expected_sha256 is None:
            return dest
        if sha256_file(dest, progress=progress) == expected_sha256.strip().lower():
            return dest
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        with urllib.request.urlopen(request, timeout=60) as response, open(part, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.strip().isdigit() else None
            sha = hashlib.sha256()
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress,
                      leave=False) as bar:
                received = _hash_stream(response, sha, bar, out)
        if total is not None and received != total:
            raise ArchiveError(f"received {received} of {total} bytes")
        actual = sha.hexdigest()
        if expected_sha256 is not None and actual != expected_sha256.strip().lower():
            raise ArchiveError(_mismatch(dest.name, expected_sha256, actual))
        os.replace(part, dest)
    except BaseException as exc:
        try:
            part.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(exc, (OSError, ValueError, http.client.HTTPException, ArchiveError)):
            raise ArchiveError(f"download of {url} failed: {_detail(exc)}") from exc
        raise
    return dest


# ---------------------------------------------------------------------------------------- archives

def archive_kind(path) -> str:
    """``"tar"`` (plain, gz, bz2 or xz) or ``"zip"``; ArchiveError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"{path} does not exist or is not a file")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
        if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            return "zip"
        if tarfile.is_tarfile(path):
            return "tar"
        if zipfile.is_zipfile(path):
            return "zip"
    except OSError as exc:
        raise ArchiveError(f"cannot read {path}: {_detail(exc)}") from exc
    for magic, name in _COMPRESSED.items():
        if head.startswith(magic):
            raise ArchiveError(f"{path.name} is {name}-compressed but no readable tar archive "
                               f"(truncated or corrupt?)")
    raise ArchiveError(f"{path.name} is neither a tar nor a zip archive (truncated or corrupt?)")


@dataclass
class _Entry:
    name: str                        # the member's name as stored (for messages)
    parts: tuple[str, ...]           # its path below the target
    kind: str                        # "dir", "file", "hardlink" or "symlink"
    source: object                   # TarInfo / ZipInfo
    link: tuple[str, ...] | None = None   # hardlink: the file it copies; symlink: where it resolves


class _Refused(Exception):
    def __init__(self, name: str, rule: str):
        super().__init__(f"member {name!r} refused: {rule}")


def _is_absolute(name: str) -> bool:
    return name.startswith(("/", "\\")) or bool(_DRIVE.match(name))


def _components(name: str) -> list[str]:
    """Path components (``\\`` is a separator too), without empty and ``.`` ones; ``..`` kept."""
    return [c for c in name.replace("\\", "/").split("/") if c not in ("", ".")]


def _member_parts(name: str) -> tuple[str, ...]:
    if not name:
        raise _Refused(name, "empty name")
    if "\x00" in name:
        raise _Refused(name, "NUL character in name")
    if _is_absolute(name):
        raise _Refused(name, "absolute path")
    parts = _components(name)
    if ".." in parts:
        raise _Refused(name, "'..' path component")
    return tuple(parts)


def _resolve_symlink(entry: _Entry, target: str, symlinks: dict[tuple[str, ...], str]) -> tuple[str, ...]:
    """Where a symbolic link points, below the extraction root, following the archive's other links."""
    if not target:
        raise _Refused(entry.name, "symbolic link with an empty target")
    if _is_absolute(target):
        raise _Refused(entry.name, f"symbolic link to the absolute path {target!r}")
    stack, pending = list(entry.parts[:-1]), _components(target)
    hops = 0
    while pending:
        comp = pending.pop(0)
        if comp == "..":
            if not stack:
                raise _Refused(entry.name, f"symbolic link to {target!r} points outside the target")
            stack.pop()
            continue
        stack.append(comp)
        nested = symlinks.get(tuple(stack))
        if nested is not None:
            hops += 1
            if hops > _MAX_LINK_HOPS:
                raise _Refused(entry.name, f"symbolic link to {target!r} is a link loop")
            if not nested or _is_absolute(nested):
                raise _Refused(entry.name, f"symbolic link to {target!r} goes through an absolute link")
            stack.pop()
            pending[:0] = _components(nested)
    return tuple(stack)


def _tar_entries(tar: tarfile.TarFile) -> list[_Entry]:
    entries = []
    for m in tar.getmembers():
        parts = _member_parts(m.name)
        if m.isdir():
            kind = "dir"
        elif m.isreg():
            kind = "file"
        elif m.issym():
            kind = "symlink"
        elif m.islnk():
            kind = "hardlink"
        elif m.ischr():
            raise _Refused(m.name, "character device")
        elif m.isblk():
            raise _Refused(m.name, "block device")
        elif m.isfifo():
            raise _Refused(m.name, "FIFO")
        else:
            raise _Refused(m.name, f"unsupported member type {m.type!r}")
        entries.append(_Entry(m.name, parts, kind, m))
    return entries


def _zip_entries(zf: zipfile.ZipFile) -> list[_Entry]:
    entries = []
    for info in zf.infolist():
        parts = _member_parts(info.filename)
        mode = info.external_attr >> 16
        if info.flag_bits & 0x1:
            raise _Refused(info.filename, "encrypted entry")
        if stat.S_ISLNK(mode):
            kind = "symlink"
        elif info.is_dir() or stat.S_ISDIR(mode):
            kind = "dir"
        elif stat.S_IFMT(mode) in (0, stat.S_IFREG):
            kind = "file"
        elif stat.S_ISCHR(mode):
            raise _Refused(info.filename, "character device")
        elif stat.S_ISBLK(mode):
            raise _Refused(info.filename, "block device")
        elif stat.S_ISFIFO(mode):
            raise _Refused(info.filename, "FIFO")
        else:
            raise _Refused(info.filename, f"unsupported file type {stat.S_IFMT(mode):#o}")
        entries.append(_Entry(info.filename, parts, kind, info))
    return entries


def _zip_link_target(zf: zipfile.ZipFile, entry: _Entry) -> str:
    if entry.source.file_size > _MAX_ZIP_LINK_BYTES:
        raise _Refused(entry.name, "symbolic link with an over-long target")
    try:
        return zf.read(entry.source).decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused(entry.name, "symbolic link target is not UTF-8") from None


def _plan(entries: list[_Entry], link_target) -> list[_Entry]:
    """Check the members as a whole (duplicates, links, paths below links); the entries to write."""
    kinds: dict[tuple[str, ...], str] = {}
    symlinks: dict[tuple[str, ...], str] = {}
    plan = []
    for e in entries:
        if not e.parts:
            if e.kind != "dir":
                raise _Refused(e.name, "names the target folder itself")
            continue                                   # "./": the target itself
        seen = kinds.get(e.parts)
        if seen is not None and not (seen == e.kind == "dir"):
            twice = "" if seen == e.kind else f" (as {seen} and as {e.kind})"
            raise _Refused(e.name, f"appears twice in the archive{twice}")
        if e.kind == "hardlink":
            target = e.source.linkname
            if not target:
                raise _Refused(e.name, "hard link with an empty target")
            if _is_absolute(target):
                raise _Refused(e.name, f"hard link to the absolute path {target!r}")
            resolved = posixpath.normpath("/".join(_components(target)) or ".")
            if resolved == ".." or resolved.startswith("../"):
                raise _Refused(e.name, f"hard link to {target!r} points outside the target")
            e.link = tuple(_components(resolved))
            if kinds.get(e.link) not in ("file", "hardlink"):
                raise _Refused(e.name, f"hard link to {target!r}, which is no earlier regular file "
                                       f"of the archive")
        elif e.kind == "symlink":
            symlinks[e.parts] = link_target(e)
        kinds[e.parts] = e.kind
        if seen is None:
            plan.append(e)
    for e in plan:                                     # order-independent: below a link or file, ever
        for i in range(1, len(e.parts)):
            above = kinds.get(e.parts[:i])
            if above not in (None, "dir"):
                raise _Refused(e.name, f"lies below {'/'.join(e.parts[:i])!r}, which is a {above} "
                                       f"member of the archive")
    for e in plan:
        if e.kind == "symlink":
            e.link = _resolve_symlink(e, symlinks[e.parts], symlinks)
    return plan


def _check_target(target: Path) -> Path | None:
    """Refuse a non-empty target; the topmost folder extraction will create (None: target exists)."""
    if target.is_dir():
        try:
            if any(target.iterdir()):
                raise ArchiveError(f"target folder {target} is not empty")
        except OSError as exc:
            raise ArchiveError(f"cannot list target folder {target}: {_detail(exc)}") from exc
        return None
    if os.path.lexists(target):
        raise ArchiveError(f"target {target} exists and is not a directory")
    top = Path(os.path.abspath(target))
    while not os.path.lexists(top.parent) and top.parent != top:
        top = top.parent
    return top


def _remove_written(target: Path, created: Path | None) -> None:
    try:
        if created is not None:
            if os.path.lexists(created):
                shutil.rmtree(created, ignore_errors=True)
            return
        for child in target.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    except OSError:
        pass


def _write_file(src, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    with os.fdopen(os.open(dest, flags, 0o666), "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)


def _extract(plan: list[_Entry], target: Path, open_member, bar) -> int:
    written = 0
    for e in plan:                                     # directories and files, in archive order
        dest = target.joinpath(*e.parts)
        if e.kind == "dir":
            dest.mkdir(parents=True, exist_ok=True)
        elif e.kind == "file":
            with open_member(e.source) as src:
                _write_file(src, dest)
            written += 1
        elif e.kind == "hardlink":                     # a copy of the file already written
            with open(target.joinpath(*e.link), "rb") as src:
                _write_file(src, dest)
            written += 1
        if e.kind != "symlink":
            bar.update(1)
    for e in plan:                                     # links last: nothing is ever written through one
        if e.kind == "symlink":
            dest = target.joinpath(*e.parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            here = "/" + "/".join(e.parts[:-1])
            os.symlink(posixpath.relpath("/" + "/".join(e.link), here), dest)
            bar.update(1)
    return written


_CORRUPT = (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error, zipfile.BadZipFile, gzip.BadGzipFile,
            struct.error)


def safe_extract(archive, target, *, progress: bool = True) -> int:
    """Extract a tar (any compression) or zip archive into the empty or new folder ``target``.

    Every member is validated first (see the module docstring); returns the number of regular
    files written. Any failure raises ArchiveError and leaves no file of the archive behind.
    """
    archive, target = Path(archive), Path(target)
    kind = archive_kind(archive)
    created = _check_target(target)
    started = False
    try:
        if kind == "tar":
            handle = tarfile.open(archive, "r:*")
        else:
            handle = zipfile.ZipFile(archive)
        with handle:
            if kind == "tar":
                plan = _plan(_tar_entries(handle), lambda e: e.source.linkname)
                while handle.fileobj.read(CHUNK):          # to the end: the gzip/xz/bz2 integrity check
                    pass
                open_member = handle.extractfile
            else:
                plan = _plan(_zip_entries(handle), lambda e: _zip_link_target(handle, e))
                open_member = handle.open
            started = True
            if created is not None:
                target.mkdir(parents=True)
            with tqdm(total=len(plan), unit="file", desc=f"extract {archive.name}", disable=not progress,
                      leave=False) as bar:
                return _extract(plan, target, open_member, bar)
    except BaseException as exc:
        if started:
            _remove_written(target, created)
        if isinstance(exc, _Refused):
            raise ArchiveError(f"{archive.name}: {exc}") from None
        if isinstance(exc, _CORRUPT) or (isinstance(exc, OSError) and exc.errno is None):
            # decompressor data errors (gzip, bz2) are OSErrors without an errno
            raise ArchiveError(f"{archive.name} is truncated or corrupt: {_detail(exc)}") from exc
        if isinstance(exc, NotImplementedError):
            raise ArchiveError(f"{archive.name}: unsupported archive feature: {_detail(exc)}") from exc
        if isinstance(exc, OSError):
            raise ArchiveError(f"extracting {archive.name} into {target} failed: {_detail(exc)}") from exc
        raise
