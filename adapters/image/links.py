"""Does a symlink in an unpacked tree lead out of it when host tools follow it?

Each symlink's own target may look harmless (``e1 -> lnk/..``) while the chain does not: with
``lnk -> .``, ``e1`` means ``./..`` - the parent of the root. The unpacker itself never follows
links, but a host tool reading ``rootfs/e8`` would. ``leaves_root`` resolves a link the way the
kernel does - component by component, following the links already present, at most ``MAX_FOLLOWS``
of them (the kernel's ELOOP bound) - and reports a climb above the root. Absolute targets restart
at the root (how the container sees them); missing components are resolved lexically.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from pathlib import Path

MAX_FOLLOWS = 40


class Unresolvable(Exception):
    """The chain is longer than ``MAX_FOLLOWS`` links, or a path in it is too long to look up."""


def leaves_root(root: Path, link_rel: str) -> bool:
    """Whether the symlink at ``root/link_rel`` resolves to somewhere above ``root``.

    Raises ``Unresolvable`` for a loop or an over-long chain (also refused by the callers).
    """
    parts = [p for p in link_rel.split("/") if p]
    current = parts[:-1]
    todo: deque[str] = deque()
    follows = 0
    # After an absolute target the walk is in the container's view, where ".." stops at the root.
    at_root_stays = _push_target(root, parts, current, todo)
    while todo:
        part = todo.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if not current:
                if at_root_stays:
                    continue
                return True
            current.pop()
            continue
        candidate = current + [part]
        try:
            st = os.lstat(root.joinpath(*candidate))
        except (FileNotFoundError, NotADirectoryError):
            current.append(part)  # nothing there (yet): no link can redirect this component
            continue
        except OSError as exc:
            raise Unresolvable(str(exc.strerror)) from None
        if stat.S_ISLNK(st.st_mode):
            follows += 1
            if follows > MAX_FOLLOWS:
                raise Unresolvable("too many levels of symbolic links")
            at_root_stays = _push_target(root, candidate, current, todo) or at_root_stays
        else:
            current.append(part)
    return False


def _push_target(root: Path, link: list[str], current: list[str], todo: deque[str]) -> bool:
    """Queue the target of the link at ``link`` before the rest; an absolute one restarts at root
    (and says so: True)."""
    try:
        target = os.readlink(root.joinpath(*link))
    except OSError as exc:
        raise Unresolvable(str(exc.strerror)) from None
    absolute = target.startswith("/")
    if absolute:
        current.clear()
    todo.extendleft(reversed(target.split("/")))
    return absolute
