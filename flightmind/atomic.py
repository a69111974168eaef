"""Writing a file so that its name only ever holds the old or the complete new content.

The content goes to a temporary file created exclusively (never through a planted link) in the
destination's own directory, is flushed and fsynced, then renamed over the destination; a rename
within one filesystem is atomic. The directory is fsynced too, so the rename survives a crash.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from flightmind.errors import FlightMindError

TEMP_SUFFIX = ".fmtmp"  # every temporary file FlightMind writes ends so: leftovers are recognizable


def temporary_path(path: Path) -> Path:
    """A fresh, exclusively created, empty file beside ``path`` (mode 0644 unless the umask is stricter)."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode open() would
    return Path(name)


def temporary_directory(path: Path) -> Path:
    """A fresh, exclusively created, empty directory beside ``path`` (mode 0755 unless the umask is stricter)."""
    name = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o777 & ~umask)  # mkdtemp makes 0700; give the directory the mode mkdir would
    return Path(name)


def fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not every platform/filesystem opens directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """``with replacing(path) as tmp:`` write the whole content to ``tmp``; on leaving the block it is
    fsynced and renamed over ``path``. On any failure (a full disk, an interrupt) ``tmp`` is removed
    and ``path`` is untouched; an OSError becomes one FlightMindError naming ``path``."""
    path = Path(path)
    try:
        tmp = temporary_path(path)
    except OSError as e:
        raise FlightMindError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        yield tmp
        with open(tmp, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise FlightMindError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def replace_with(path: str | Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` writes the whole content to a temporary file that then replaces ``path`` (see ``replacing``)."""
    with replacing(path) as tmp:
        write(tmp)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs) -> Iterator[IO]:
    """``with atomic_open(path) as f: f.write(...)``: ``path`` is replaced only if the block completes."""
    with replacing(path) as tmp, open(tmp, mode, **kwargs) as file:
        yield file


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as file:
        file.write(text)


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """Write ``rows`` as JSON lines (UTF-8, unescaped), creating the parent directories; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as file:
        file.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return path


def remove_leftovers(directory: str | Path) -> list[Path]:
    """Delete temporary files (and directories: a distributed checkpoint's) an interrupted write left
    in ``directory``; return them."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    leftovers = list(directory.glob(f".*{TEMP_SUFFIX}"))
    for p in leftovers:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return leftovers


def link_or_copy(source: Path, name: Path) -> None:
    """``name`` becomes a second name of ``source`` (a hard link), replacing it atomically; a copy
    where the filesystem has no hard links. A distributed checkpoint (a directory) gets a directory
    of hard links to its files: no name ever points into a directory that retention may delete."""
    if name.exists() and os.path.samefile(source, name):
        return  # already its name (renaming a hard link over its twin would do nothing, leaving the link)
    if not source.is_dir():
        tmp = name.with_name(f".{name.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            os.link(source, tmp)  # fails if tmp exists: never through a planted file
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, name)
        fsync_directory(name.parent)
        return
    tmp = temporary_directory(name)
    for file in source.iterdir():
        try:
            os.link(file, tmp / file.name)
        except OSError:
            shutil.copyfile(file, tmp / file.name)
    fsync_directory(tmp)
    replace_directory(tmp, name)


def replace_directory(tmp: Path, name: Path) -> None:
    """Rename the complete directory ``tmp`` to ``name``. A directory cannot be renamed over another:
    the old one is first renamed aside (a crash between the two renames leaves ``name`` missing, and
    ``--ckpt_path last`` takes the newest complete checkpoint) and then removed."""
    old = None
    if name.is_symlink() or name.is_file():
        name.unlink()
    elif name.is_dir():
        old = name.with_name(f".{name.name}.{secrets.token_hex(4)}.old{TEMP_SUFFIX}")
        os.replace(name, old)
    os.replace(tmp, name)
    fsync_directory(name.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
