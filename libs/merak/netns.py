"""Network namespaces without forking: create with unshare+bind-mount, work inside with setns.

Linux namespaces belong to threads, not processes, so a worker thread can enter a namespace,
open netlink sockets there and leave again while the event loop's thread never moves. This is
~20x cheaper than helpers that fork a process per namespace (measured here: ~0.5 ms vs ~6 ms).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MNT_DETACH = 2
# Characters `ip netns` accepts in a name, minus anything odd; names are files under /run/netns.
VALID_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")

_libc = ctypes.CDLL(None, use_errno=True)
_root_fd: int | None = None
_root_lock = threading.Lock()


class NetnsError(OSError):
    """A namespace operation failed."""


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise NetnsError(code, f"{what}: {os.strerror(code)}")


def _root() -> int:
    """An fd of the namespace this process started in (opened once, kept for setns back)."""
    global _root_fd  # noqa: PLW0603 - one fd per process by nature; never changes once opened
    with _root_lock:
        if _root_fd is None:
            _root_fd = os.open(f"/proc/{os.getpid()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        return _root_fd


def _validate(name: str) -> None:
    if not VALID_NAME.match(name):
        raise ValueError(f"invalid network namespace name: {name!r}")


def path_of(name: str) -> Path:
    """The bind-mount file of namespace `name`."""
    _validate(name)
    return NETNS_DIR / name


def exists(name: str) -> bool:
    """True when namespace `name` exists."""
    return path_of(name).exists()


def list_names(prefix: str = "") -> list[str]:
    """Names of the namespaces under /run/netns starting with `prefix`."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def create(name: str) -> None:
    """Create namespace `name` (like `ip netns add`); FileExistsError if it exists.

    Runs unshare() in the calling thread, so call it from a worker thread, never the event loop's.
    """
    path = path_of(name)
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    _ensure_shared_mount()
    root = _root()
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.close(fd)
    try:
        _check(_libc.unshare(CLONE_NEWNET), f"unshare for {name}")
        try:
            source = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
            _check(_libc.mount(source, bytes(path), None, MS_BIND, None), f"bind-mount {name}")
        finally:
            _check(_libc.setns(root, CLONE_NEWNET), "setns back to the root namespace")
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def remove(name: str) -> bool:
    """Delete namespace `name` (like `ip netns del`); False when it did not exist."""
    path = path_of(name)
    if not path.exists():
        return False
    result = _libc.umount2(bytes(path), MNT_DETACH)
    if result != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        _check(result, f"umount {name}")
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Move the calling thread into namespace `name` for the block, then back.

    Sockets opened inside stay in that namespace after the block ends.
    """
    root = _root()
    fd = os.open(path_of(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns into {name}")
    finally:
        os.close(fd)
    try:
        yield
    finally:
        _check(_libc.setns(root, CLONE_NEWNET), "setns back to the root namespace")


@contextlib.contextmanager
def entered_fd(fd: int) -> Iterator[None]:
    """Move the calling thread into the namespace `fd` refers to for the block, then back where it was."""
    back = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if os.fstat(back).st_ino == os.fstat(fd).st_ino:
            yield  # already there: no setns, which would need CAP_SYS_ADMIN
            return
        _check(_libc.setns(fd, CLONE_NEWNET), "setns into a saved namespace")
        try:
            yield
        finally:
            _check(_libc.setns(back, CLONE_NEWNET), "setns back")
    finally:
        os.close(back)


def enter_fd_for_good(fd: int) -> None:
    """Move the calling thread into the namespace `fd` refers to, and stay (a worker thread's initializer)."""
    _check(_libc.setns(fd, CLONE_NEWNET), "setns into a saved namespace")


def enter_for_good(name: str) -> None:
    """Move the calling thread into namespace `name` and stay (threads it starts later follow)."""
    fd = os.open(path_of(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns into {name}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def opened(name: str) -> Iterator[int]:
    """An fd of namespace `name` (for IFLA_NET_NS_FD, say), closed after the block."""
    fd = os.open(path_of(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def run_in(name: str, func: Callable[[], T]) -> T:
    """Call `func` with the calling thread inside namespace `name`."""
    with entered(name):
        return func()


_shared_done = False


def _ensure_shared_mount() -> None:
    """Make /run/netns a shared mount point, as `ip netns add` does, so bind mounts propagate."""
    global _shared_done  # noqa: PLW0603 - a once-per-process setup flag
    if _shared_done:
        return
    # Mirrors iproute2: if /run/netns is not a mount point yet, bind it onto itself, then make it
    # shared. A failure is harmless on hosts where it already is (EINVAL).
    mounts = Path("/proc/self/mountinfo").read_text()
    if f" {NETNS_DIR} " not in mounts:
        _libc.mount(bytes(NETNS_DIR), bytes(NETNS_DIR), None, MS_BIND | 16384, None)  # MS_REC
    _libc.mount(b"none", bytes(NETNS_DIR), None, 1 << 20 | 16384, None)  # MS_SHARED | MS_REC
    _shared_done = True
