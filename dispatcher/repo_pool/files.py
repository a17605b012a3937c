"""Files of the Repo Pool: emptying and removing slot folders, writing its state file."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any


def empty_dir(path: str | Path) -> None:
    """Make ``path`` an existing, empty directory (symlinks inside are removed, not followed).

    Cheap when it already is one (the common case of a slot whose task left nothing): one
    lstat and one directory read.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        os.makedirs(path, exist_ok=True)
        return
    if not stat.S_ISDIR(st.st_mode):  # a symlink or a file where the slot should be
        os.unlink(path)
        os.makedirs(path, exist_ok=True)
        return
    with os.scandir(path) as entries:
        children = list(entries)
    for child in children:
        if child.is_dir(follow_symlinks=False):
            remove_tree(Path(child.path))
        else:
            os.unlink(child.path)


def write_whole(path: Path, body: bytes) -> None:
    """Replace ``path`` with ``body`` atomically (tmp file and rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(body)
    os.replace(tmp, path)


def remove_tree(path: Path) -> None:
    """rmtree that also removes read-only files and directories an agent left behind."""

    def on_error(func: Any, name: str, _exc: Any) -> None:
        try:
            os.chmod(name, stat.S_IRWXU)
            parent = os.path.dirname(name)
            os.chmod(parent, stat.S_IRWXU)
            func(name)
        except OSError:
            pass

    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=on_error)
