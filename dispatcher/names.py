"""Task ids and taskset names: which are safe, and how they become paths and branch names.

A name (a taskset's, or a task id) is refused at submit when it could not be used safely as a
path part or a key: empty, ``.`` or ``..``, a ``/`` or ``\\``, a control character, leading or
trailing spaces, or longer than :data:`MAX_NAME` characters.

:func:`path_component` and :func:`branch_component` turn a name into a folder name and a git
branch part with an encoding that cannot collide: ``a b``, ``a_b``, ``a:b`` and ``a;b`` stay four
different folders and branches (the old mapping of every other character to ``_`` put them in
one). Names made only of ``A-Z a-z 0-9 _ . -`` (and not too long) keep their old folder name, so
attempt directories of such tasks written by earlier versions are still found.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote

__all__ = ["MAX_NAME", "branch_component", "name_problem", "path_component"]

#: Longest taskset name or task id, in characters.
MAX_NAME = 200
#: Longest encoded part; longer ones keep a prefix and a hash of the whole name.
_MAX_PART = 120


#: Names that are fine at a glance: the usual characters, not too long (``.``/``..`` aside).
_PLAIN = re.compile(rf"[A-Za-z0-9_.-]{{1,{MAX_NAME}}}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a taskset name or task id, or None when it can."""
    if not isinstance(name, str):
        return "expected a string"
    if _PLAIN.fullmatch(name) is not None and name not in (".", ".."):
        return None  # the common case: one regular expression instead of each check below
    if not name:
        return "is empty"
    if name in (".", ".."):
        return f"{name!r} is not a name (it means a folder)"
    if "/" in name:
        return "contains '/' (it separates the taskset from the id in task keys)"
    if "\\" in name:
        return "contains '\\'"
    if _CONTROL.search(name) is not None:
        return "contains a control character (a tab, a newline, ...)"
    if name != name.strip():
        return "begins or ends with a space"
    if len(name) > MAX_NAME:
        return f"is longer than {MAX_NAME} characters ({len(name)})"
    return None


def _encode(name: str, keep: str) -> str:
    # quote() never emits '~' after this replace, so the hashed form below (which has one)
    # can never equal the encoding of another name.
    text = quote(name, safe=keep).replace("~", "%7E")
    if len(text) > _MAX_PART:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:24]
        text = f"{text[:_MAX_PART - 25]}~{digest}"
    return text


def path_component(name: str) -> str:
    """A folder name for ``name``; different names always give different folder names.

    ``A-Z a-z 0-9 _ . -`` stay as they are, every other character is percent-encoded (``%``
    itself too), ``.`` and ``..`` become ``%2E`` and ``%2E%2E``.
    """
    if name in (".", ".."):
        return "%2E" * len(name)
    return _encode(name, "")


def branch_component(name: str) -> str:
    """A git branch name part for ``name``; different names always give different parts.

    Like :func:`path_component`, and also free of what git refuses in a ref (``..``, a
    leading ``.`` or ``-``, a trailing ``.lock`` or ``.``): such dots and dashes are encoded.
    """
    text = path_component(name)
    text = text.replace("..", "%2E%2E") if ".." in text else text
    if text.startswith((".", "-")):
        text = f"%{ord(text[0]):02X}{text[1:]}"
    if text.endswith("."):
        text = f"{text[:-1]}%2E"
    if text.endswith(".lock"):
        text = f"{text[:-5]}%2Elock"
    # git refuses '~' in a ref; the hashed form is longer than any unhashed one, so its
    # '%7E' cannot be mistaken for an encoded '~' of another name.
    return text.replace("~", "%7E")
