"""Atomic writes and cross-process locks: the one copy every cache and state writer uses.

A file is written under a temporary name in its own folder and moved into place with ``os.replace``,
so a reader (or a process killed mid-write) sees the old file or the new one, never half of one; the
temporary file is removed on any failure. Writes that fail because the folder is read-only, full, or
not a folder raise :class:`CacheWriteError` naming the folder.

:func:`file_lock` holds an exclusive ``flock`` on ``<target>.lock`` next to a target, so processes
sharing one cache folder compute an expensive file once: the others wait, then find it finished.
The kernel releases the lock when its holder exits or is killed, so a lock never outlives a process.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import importlib.util
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: atomic writes only, no waiting for other processes
    fcntl = None

log = logging.getLogger("revive_plugin.io")

#: errno values that mean "this folder cannot take the file" (read-only, full, quota, size limit, not a folder)
WRITE_ERRNOS = frozenset(
    getattr(errno, name) for name in ("EROFS", "EACCES", "EPERM", "ENOSPC", "EDQUOT", "EFBIG", "ENOTDIR")
    if hasattr(errno, name)
)
CACHE_HINT = "set $REVIVE_CACHE_DIR to a writable folder with free space"
DEFAULT_LOCK_TIMEOUT = 24 * 3600.0


class CacheWriteError(OSError):
    """A file could not be written because its folder is read-only, full or not a folder."""

    def __str__(self) -> str:
        return str(self.strerror)  # the message names the folder; no "[Errno N]" prefix


def _errno_of(exc: BaseException) -> int | None:
    """errno of an OSError, or of a library error that reports one as ``(os error N)`` (safetensors)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    m = re.search(r"os error (\d+)", str(exc))
    return int(m.group(1)) if m else None


def write_error(exc: BaseException, folder, what: str, hint: str = "") -> CacheWriteError | None:
    """A :class:`CacheWriteError` naming ``folder`` when ``exc`` means the folder cannot take the write."""
    if isinstance(exc, CacheWriteError):
        return exc
    code = _errno_of(exc)
    if code not in WRITE_ERRNOS:
        return None
    msg = f"cannot write {what} in {folder}: {os.strerror(code)}" + (f" ({hint})" if hint else "")
    return CacheWriteError(code, msg)


def ensure_dir(folder, what: str = "files", hint: str = "") -> Path:
    """Create ``folder`` (and parents); :class:`CacheWriteError` naming it when that is impossible."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        err = write_error(e, folder, what, hint)
        if err is None and isinstance(e, FileExistsError):  # the path exists as a file
            err = CacheWriteError(errno.ENOTDIR, f"cannot write {what} in {folder}: it is not a folder")
        if err is None:
            raise
        raise err from e
    return folder


def _new_temp(target: Path, make) -> Path:
    """A fresh ``.<name>.<random>.tmp`` next to ``target``, created by ``make(path)`` (which fails if it exists)."""
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            make(tmp)
            return tmp
        except FileExistsError:
            continue


def _make_file(tmp: Path) -> None:
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies, as for open()


@contextlib.contextmanager
def _atomic(target: Path, make, remove, folder: bool, what: str, hint: str) -> Iterator[Path]:
    """A fresh temporary path ``make``-d next to ``target``, moved onto it when the block ends normally (for a
    ``folder``, an existing target is removed first) and ``remove``-d otherwise; folder write errors become
    :class:`CacheWriteError`."""
    ensure_dir(target.parent, what, hint)
    try:
        tmp = _new_temp(target, make)
    except OSError as e:
        err = write_error(e, target.parent, what, hint)
        raise (err or e) from e
    try:
        yield tmp
        if folder and target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except Exception as e:
        err = write_error(e, target.parent, what, hint)
        if err is None:
            raise
        raise err from e
    finally:
        remove(tmp)


def _remove_file(tmp: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()


def atomic_path(path, what: str = "file", hint: str = "") -> contextlib.AbstractContextManager[Path]:
    """Yield a temporary path next to ``path``; when the block ends normally it replaces ``path``,
    otherwise it is removed. Write errors of the folder become :class:`CacheWriteError`."""
    return _atomic(Path(path), _make_file, _remove_file, False, what, hint)


def remove_orphan_temps(target) -> list[Path]:
    """Remove the temporary files and folders (``.<name>.<random>.tmp``) that writers of ``target`` killed
    mid-write left next to it; returns them. Only for a caller that holds ``target``'s :func:`file_lock` (or
    otherwise knows that no other process is writing ``target`` now)."""
    target = Path(target)
    found = sorted(target.parent.glob(f".{glob.escape(target.name)}.*.tmp"))
    for p in found:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    return found


def atomic_write_bytes(path, data: bytes, what: str = "file", hint: str = "", fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (``fsync`` before the rename when asked)."""
    with atomic_path(path, what, hint) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path, text: str, what: str = "file", hint: str = "", fsync: bool = False) -> Path:
    """UTF-8 form of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"), what, hint, fsync)


def atomic_save_safetensors(tensors: dict, path, metadata: dict | None = None, what: str = "tensors",
                            hint: str = "") -> Path:
    """Write a name -> tensor dict (moved to CPU, made contiguous) as safetensors, atomically."""
    from safetensors.torch import save_file

    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path, what, hint) as tmp:
        save_file(cpu, str(tmp), metadata=metadata)
    return Path(path)


def atomic_dir(target, what: str = "folder", hint: str = "") -> contextlib.AbstractContextManager[Path]:
    """Yield a fresh temporary folder next to ``target``; when the block ends normally it replaces
    ``target`` (an existing one is removed first), otherwise it is removed."""
    return _atomic(Path(target), lambda p: p.mkdir(0o777), lambda p: shutil.rmtree(p, ignore_errors=True),
                   True, what, hint)


def default_cache_dir() -> Path:
    """``$REVIVE_CACHE_DIR``, else ``$XDG_CACHE_HOME/revive-plugin``, else ``~/.cache/revive-plugin``."""
    if os.environ.get("REVIVE_CACHE_DIR"):
        return Path(os.environ["REVIVE_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "revive-plugin"


def package_dir(name: str) -> Path | None:
    """Folder of the installed package ``name`` (its data files sit below it), or None when not installed."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def lock_timeout() -> float:
    """Seconds to wait for another process's lock: ``$REVIVE_LOCK_TIMEOUT``, default 24 h."""
    raw = os.environ.get("REVIVE_LOCK_TIMEOUT")
    if not raw:
        return DEFAULT_LOCK_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"REVIVE_LOCK_TIMEOUT must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"REVIVE_LOCK_TIMEOUT must be >= 0, got {raw!r}")
    return value


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        return os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
    return "?"


@contextlib.contextmanager
def file_lock(target, what: str = "file", timeout: float | None = None, hint: str = "") -> Iterator[bool]:
    """Hold an exclusive lock on ``<target>.lock`` for the block; yields whether it had to wait.

    Callers check again for the finished target inside the block: another process may have made
    it while this one waited. Waiting longer than ``timeout`` (default :func:`lock_timeout`) raises
    TimeoutError naming the lock file and the process holding it. The lock file stays (removing it
    would let two processes lock different files of the same name).
    """
    target = Path(target)
    lock_path = target.with_name(target.name + ".lock")
    ensure_dir(lock_path.parent, what, hint)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        err = write_error(e, lock_path.parent, what, hint)
        raise (err or e) from e
    try:
        waited = False
        if fcntl is not None and not _try_flock(fd):
            waited = True
            limit = lock_timeout() if timeout is None else float(timeout)
            holder = _holder(fd)
            log.warning("waiting for another process (pid %s) to finish %s %s", holder, what, target)
            start = time.monotonic()
            delay = 0.05
            while not _try_flock(fd):
                if time.monotonic() - start > limit:
                    raise TimeoutError(
                        f"gave up after {limit:.0f} s waiting for {lock_path} (held by pid {_holder(fd)}, "
                        f"which is still writing {what} {target}); stop that process or raise $REVIVE_LOCK_TIMEOUT")
                time.sleep(delay)
                delay = min(2.0, delay * 1.5)
            log.warning("waited %.1f s for %s %s", time.monotonic() - start, what, target)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield waited
    finally:
        os.close(fd)
