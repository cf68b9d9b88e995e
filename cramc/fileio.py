"""Reading user data files and writing outputs safely.

Outputs never destroy anything:
- an output that is the same file as an input of the command (same inode, links
  resolved) is refused before any work starts (`check_outputs`);
- a regular file is written to a temporary file beside it and renamed over the
  old one only once it is complete (nothing half-written on disk); a symbolic
  link is followed, so the link stays and its target is replaced;
- anything else that exists (a device such as /dev/null, a FIFO, a path under
  /dev or /proc such as /dev/stdout) is written in place: a rename would
  replace the device node or the link itself;
- a directory, a missing parent directory, a read-only place or a full disk is a
  `UserError` naming the path; a failed write leaves no temporary file behind.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cramc.errors import UserError


def load_npz(path: str) -> dict[str, np.ndarray]:
    """The named arrays of an .npz data file: one per model input or output, leading axis = samples."""
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not an .npz file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{path}: not a readable .npz file ({e})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        kind = f"a single array of shape {list(z.shape)}" if isinstance(z, np.ndarray) else "not an archive"
        raise UserError(
            f"{path}: expected an .npz archive of named arrays (one per model input, e.g. np.savez(path, x=array)); "
            f"this file is a .npy file, {kind}"
        )
    try:
        with z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{path}: not a readable .npz file ({e})") from None
    for name, arr in arrays.items():
        if arr.ndim == 0:
            raise UserError(
                f"{path}: array '{name}' is a scalar; a data file holds arrays whose leading axis is samples"
            )
        if arr.shape[0] == 0:
            raise UserError(f"{path}: array '{name}' has 0 samples (shape {list(arr.shape)}; leading axis = samples)")
    return arrays


def load_npy(path: str) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not an .npy file") from None
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"{path}: not a readable .npy file ({e})") from None
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise UserError(f"{path}: expected a single .npy array, got an .npz archive")
    return arr


@dataclass(frozen=True)
class _Target:
    """Where and how an output path is written."""

    path: str  # as the user gave it (for messages)
    real: str  # links resolved: the file that is replaced, or the place a new file is created
    in_place: bool  # write into the existing object (device, FIFO, /dev or /proc path) instead of replacing it
    exists: bool


def _target(path: str) -> _Target:
    if not path:
        raise UserError("an output path is empty")
    absolute = os.path.abspath(path)
    try:
        st = os.stat(path)  # follows links
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UserError(f"cannot write {path}: it is a directory")
    if st is not None and stat.S_ISSOCK(st.st_mode):
        raise UserError(f"cannot write {path}: it is a socket")
    special = absolute.startswith(("/dev/", "/proc/"))
    if st is not None and (special or not stat.S_ISREG(st.st_mode)):
        return _Target(path, path, True, True)
    real = os.path.realpath(path)
    parent = os.path.dirname(real)
    if not os.path.isdir(parent):
        shown = os.path.dirname(path) or "."
        raise UserError(f"cannot write {path}: directory {shown} does not exist")
    return _Target(path, real, False, st is not None)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(
    outputs: Sequence[tuple[str, str | None]],
    inputs: Sequence[tuple[str, str | None]] = (),
    need_bytes: dict[str, int] | None = None,
) -> None:
    """Before the work starts: every output can be written, none is an input, no two are the same file.

    `outputs` and `inputs` are (flag, path) pairs (a None path is skipped), so
    the messages name the flags.  Each output's directory gets a probe file
    created and removed (a read-only or missing directory fails now, not after
    an hour of simulation); `need_bytes` (flag -> estimated size) checks the
    free space of the file system too.
    """
    given = [(f, p) for f, p in outputs if p is not None]
    for i, (flag, path) in enumerate(given):
        t = _target(path)
        for iflag, ipath in inputs:
            if ipath is not None and t.exists and _same_file(path, ipath):
                raise UserError(
                    f"{flag} {path} is the same file as {iflag} {ipath}: refusing to overwrite an input "
                    "(choose another output path)"
                )
        if t.in_place:  # a device or FIFO; two outputs to /dev/null are fine
            if not os.access(path, os.W_OK):
                raise UserError(f"cannot write {path}: permission denied")
            continue
        for oflag, opath in given[:i]:
            if os.path.realpath(opath) == t.real or (t.exists and _same_file(path, opath)):
                raise UserError(f"{oflag} and {flag} name the same file ({path})")
        parent = os.path.dirname(t.real)
        try:
            fd, probe = tempfile.mkstemp(prefix=".cramc-probe.", dir=parent)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise UserError(f"cannot write {path}: {e.strerror or e}") from None
        need = (need_bytes or {}).get(flag)
        if need:
            free = shutil.disk_usage(parent).free
            if free < need:
                raise UserError(
                    f"cannot write {path}: it needs about {_size(need)} and its file system has {_size(free)} free"
                )


def _size(n: int) -> str:
    for unit, k in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{n} bytes"


def _write_error(path: str, e: OSError) -> UserError:
    why = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        why += "; nothing was written"
    return UserError(f"cannot write {path}: {why}")


def atomic_write(path: str, writer: Callable[[str], object]) -> None:
    """Call writer(file_path) so that `path` ends up complete or untouched (see the module docstring).

    What `writer` returns is ignored (so `Path.write_text`, which returns a count, can be one).
    """
    t = _target(path)
    if t.in_place:
        # a device, FIFO or terminal may not seek (zip archives need to): write a scratch file, then stream it
        try:
            with tempfile.TemporaryDirectory(prefix="cramc-") as scratch:
                tmp = os.path.join(scratch, "out")
                writer(tmp)
                with open(tmp, "rb") as src, open(path, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        except OSError as e:
            raise _write_error(path, e) from None
        return
    parent = os.path.dirname(t.real)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{Path(t.real).name}.", suffix=".tmp", dir=parent)
        os.close(fd)
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        writer(tmp)
        if t.exists:
            mode = stat.S_IMODE(os.stat(t.real).st_mode)  # keep the permissions of the file it replaces
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask  # mkstemp makes 0600; give a new file ordinary permissions
        os.chmod(tmp, mode)
        os.replace(tmp, t.real)
    except OSError as e:
        _remove(tmp)
        raise _write_error(path, e) from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def write_text(path: str, text: str) -> None:
    def w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, w)


def write_json(path: str, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    def w(tmp: str) -> None:
        with open(tmp, "wb") as f:
            # numpy's stub lets a keyword array bind savez's allow_pickle: bool; the names are tensors'
            np.savez(f, **arrays)  # type: ignore[arg-type]

    atomic_write(path, w)
