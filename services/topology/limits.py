"""How large a topology may be: what a Linux bridge and an interface name hold, and the vhosts asked."""

from __future__ import annotations

MAX_VHOSTS = 1_000_000
# A Linux bridge holds at most 1,023 ports (port numbers are 10 bits, 0 is reserved).
MAX_BRIDGE_PORTS = 1023
# Every generated switch keeps one port for its uplink.
MAX_DOWNLINKS = MAX_BRIDGE_PORTS - 1
# IFNAMSIZ is 16 including the terminating NUL.
MAX_IFNAME = 15
MAX_NODE_NAME = 32
