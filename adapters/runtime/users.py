"""Who the container's process runs as: CRI's run_as_* fields or the image's User, resolved in the image.

Names are looked up in the image's own ``/etc/passwd`` and ``/etc/group`` (never the agent's), read
without following a symlink: an image must not make the runtime read a file outside its rootfs.
The rules are containerd's (``WithUser``, ``WithUserID``, ``WithUsername``, ``WithAdditionalGIDs``):

* ``run_as_user`` (a uid) wins over ``run_as_username``; either one replaces the image's ``User``;
* a uid takes its primary gid from the passwd entry with that uid, or 0 when there is none;
* a name must exist in passwd (uid and gid from there); a ``user:group`` string (the image's User)
  takes the group from the ``:group`` part, numeric or a name that must exist in /etc/group;
* ``run_as_group`` replaces the primary gid and is only valid together with a user;
* additional gids are the groups of /etc/group that list the user's name as a member.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InvalidContainerSpec

MAX_ACCOUNT_FILE = 1 << 20


@dataclass(frozen=True)
class ProcessUser:
    uid: int
    gid: int
    additional_gids: list[int] = field(default_factory=list)

    def oci(self) -> dict[str, object]:
        out: dict[str, object] = {"uid": self.uid, "gid": self.gid}
        if self.additional_gids:
            out["additionalGids"] = list(self.additional_gids)
        return out


def read_account_file(rootfs: Path, name: str) -> list[list[str]]:
    """``rootfs/etc/<name>`` split into ':' fields; empty when missing, not a regular file, or reached
    through a symlink (``/etc`` or the file itself)."""
    etc = rootfs / "etc"
    try:
        if not stat.S_ISDIR(os.lstat(etc).st_mode):
            return []
        fd = os.open(etc / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the file is a symlink
            return []
        raise
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_ACCOUNT_FILE:
            return []
        text = fh.read(MAX_ACCOUNT_FILE).decode("utf-8", errors="replace")
    return [line.split(":") for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _passwd_by(rows: list[list[str]], index: int, value: str) -> list[str] | None:
    for row in rows:
        if len(row) >= 4 and row[index] == value and row[2].isdigit():
            return row
    return None


def _group_gid(rootfs: Path, group: str) -> int:
    if group.isdigit():
        return int(group)
    for row in read_account_file(rootfs, "group"):
        if len(row) >= 3 and row[0] == group and row[2].isdigit():
            return int(row[2])
    raise InvalidContainerSpec(f"The group {group[:64]!r} is not in the image's /etc/group; use a numeric gid.")


def _by_uid(rootfs: Path, uid: int) -> tuple[int, str | None]:
    row = _passwd_by(read_account_file(rootfs, "passwd"), 2, str(uid))
    if row is None:
        return 0, None
    return (int(row[3]) if row[3].isdigit() else 0), row[0]


def _by_name(rootfs: Path, name: str) -> tuple[int, int]:
    row = _passwd_by(read_account_file(rootfs, "passwd"), 0, name)
    if row is None:
        raise InvalidContainerSpec(f"The user {name[:64]!r} is not in the image's /etc/passwd; use a numeric uid.")
    return int(row[2]), int(row[3]) if row[3].isdigit() else 0


def _member_gids(rootfs: Path, username: str | None, primary: int) -> list[int]:
    if not username:
        return []
    gids = set()
    for row in read_account_file(rootfs, "group"):
        if len(row) >= 4 and row[2].isdigit() and username in row[3].split(","):
            gids.add(int(row[2]))
    gids.discard(primary)
    return sorted(gids)


def parse_user_string(rootfs: Path, text: str) -> ProcessUser:
    """An image ``User``: ``uid``, ``name``, ``uid:gid``, ``name:group`` (empty -> root)."""
    text = text.strip()
    if not text:
        return ProcessUser(0, 0)
    user, sep, group = text.partition(":")
    if user.isdigit():
        uid = int(user)
        gid, name = _by_uid(rootfs, uid)
    elif user:
        uid, gid = _by_name(rootfs, user)
        name = user
    else:
        raise InvalidContainerSpec(f"The user {text[:64]!r} has no user part; write 'user:group'.")
    if sep:
        if not group:
            raise InvalidContainerSpec(f"The user {text[:64]!r} has an empty group part; write 'user:group'.")
        gid = _group_gid(rootfs, group)
    return ProcessUser(uid, gid, _member_gids(rootfs, name, gid))


def resolve_user(
    rootfs: Path,
    image_user: str = "",
    run_as_user: int | None = None,
    run_as_username: str | None = None,
    run_as_group: int | None = None,
) -> ProcessUser:
    """The process user by the rules in this module's docstring."""
    if run_as_group is not None and run_as_user is None and not run_as_username:
        raise InvalidContainerSpec("run_as_group is set without run_as_user or run_as_username; set a user too.")
    if run_as_user is not None:
        gid, name = _by_uid(rootfs, run_as_user)
        uid = run_as_user
    elif run_as_username:
        uid, gid = _by_name(rootfs, run_as_username)
        name = run_as_username
    else:
        return parse_user_string(rootfs, image_user)
    if run_as_group is not None:
        gid = run_as_group
    return ProcessUser(uid, gid, _member_gids(rootfs, name, gid))
