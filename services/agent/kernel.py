"""pyroute2 helpers of the real data plane: sockets opened inside a namespace, link reads, batch deletes.

Each `IPRoute` is created while the calling thread is inside the namespace it serves and is used
and closed by that same thread (its socket stays in that namespace).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Iterator
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from merak import netns

# A link group (IFLA_GROUP) no one else uses, to delete many devices in one batch.
DOOMED_GROUP = 0x4D4B


def set_sysctl(path: str, value: str, *, optional: bool = False) -> None:
    """Write /proc/sys/<path> for the calling thread's network namespace (call it inside `entered()`)."""
    # The kernel resolves /proc/sys/net against the namespace of the task that opens the file:
    # this thread after setns, not the process (checked by test_proc_sys_net_*).
    try:
        with open(f"/proc/sys/{path}", "w") as f:
            f.write(value)
    except FileNotFoundError:
        if not optional:
            raise


def ensure_sysctl(path: str, value: str, *, optional: bool = False) -> None:
    """`set_sysctl`, only when /proc/sys/<path> holds another value: some writes act even when nothing
    changes (net/ipv6/conf/all/disable_ipv6 is applied to every device of the namespace again)."""
    try:
        with open(f"/proc/sys/{path}") as f:
            if f.read().strip() == value:
                return
    except FileNotFoundError:
        if not optional:
            raise
        return
    set_sysctl(path, value, optional=optional)


def open_ipr(ns: str) -> Any:
    """An IPRoute whose netlink socket lives in namespace `ns`; only this thread may use it."""
    with netns.entered(ns):
        # groups=0: no multicast subscription, so a long batch does not queue every notification.
        return IPRoute(groups=0)


@contextlib.contextmanager
def ipr_in(ns: str) -> Iterator[Any]:
    """`open_ipr` for the block, closed after."""
    ipr = open_ipr(ns)
    try:
        yield ipr
    finally:
        ipr.close()


ns_fd = netns.opened  # an fd of a namespace for IFLA_NET_NS_FD, closed after the block


def link_kind(link: Any) -> str:
    """The link's kind ("veth", "bridge", "vxlan"), "" when it has none."""
    kind = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
    return str(kind) if kind else ""


def links(ipr: Any) -> dict[str, Any]:
    """Every link of the socket's namespace by name."""
    return {str(link.get("ifname")): link for link in ipr.link("dump")}


def link_or_none(ipr: Any, ifname: str) -> Any:
    """The link named `ifname`, None when there is none."""
    try:
        return ipr.link("get", ifname=ifname)[0]
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise


def ipv4_addrs(ipr: Any, index: int) -> set[tuple[str, int]]:
    """(address, prefix length) of every IPv4 address on link `index`."""
    return {
        (str(a.get("address")), int(a["prefixlen"]))
        for a in ipr.addr("dump", family=socket.AF_INET)
        if a["index"] == index
    }


def delete_links(ipr: Any, links: dict[str, int]) -> dict[str, str]:
    """Delete links (name -> index) in one kernel batch; returns name -> problem for the ones that stay."""
    # Deleting one device waits for an RCU grace period (~20 ms here); moving the devices into one
    # group and deleting the group unregisters them all behind a single one.
    problems: dict[str, str] = {}
    if not links:
        return problems
    try:
        for index in links.values():
            ipr.link("set", index=index, group=DOOMED_GROUP)
        ipr.link("del", group=DOOMED_GROUP)
        return problems
    except NetlinkError:
        pass  # a device without rtnl dellink refuses the group delete: one by one then
    for name, index in links.items():
        try:
            ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                problems[name] = describe(exc)
    return problems


def describe(exc: BaseException) -> str:
    """A short human text for a netlink or OS error."""
    if isinstance(exc, NetlinkError):
        return f"{os.strerror(exc.code) if exc.code > 0 else 'netlink error'} ({exc})"
    return str(exc) or type(exc).__name__
