"""What thresholds and suppression count by: a key made of one or more captures of a match.

`key = "ip"` keys by one capture, `key = ["user", "ip"]` by the pair, and `"ip/24"` or `"ip/64"`
by the network an address capture lies in: an IPv6 attacker owns a whole /64 and rotates through
it, so counting its single addresses would never reach a threshold. A prefix longer than the
address family's (`/64` on an IPv4 address) takes the whole address; a value that is not an
address is keyed as it is. The key is a tuple of strings, which is hashable, sortable and JSON.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from functools import lru_cache


class KeyMaker:
    """Builds the key of a match from its captures, for one rule's `key` spec (validated)."""

    __slots__ = ("captures", "parts")

    def __init__(self, spec: tuple[str, ...]) -> None:
        self.parts: tuple[tuple[str, int | None], ...] = tuple(
            (name, int(prefix) if prefix else None)
            for name, _, prefix in (part.partition("/") for part in spec)
        )
        self.captures = tuple(name for name, _ in self.parts)

    def key(self, captures: Mapping[str, str | None]) -> tuple[str, ...] | None:
        """The key's values, or None when one of its captures took no part in the match."""
        values = []
        for name, prefix in self.parts:
            value = captures.get(name)
            if value is None:
                return None
            values.append(value if prefix is None else network_of(value, prefix))
        return tuple(values)

    def as_dict(self, key: tuple[str, ...]) -> dict[str, str]:
        """`{capture: value}` as records show a key (`"ip": "2001:db8:1:2::/64"` for a prefix)."""
        return dict(zip(self.captures, key, strict=True))


@lru_cache(maxsize=4096)
def network_of(value: str, prefix: int) -> str:
    """`203.0.113.9`, 24 → `203.0.113.0/24`; a non-address is returned as it is."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return value
    length = min(prefix, address.max_prefixlen)
    return str(ipaddress.ip_network((address, length), strict=False))
