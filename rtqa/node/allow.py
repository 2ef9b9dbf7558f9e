"""Who may send: calling AE titles, optionally from given addresses, mapped to institutions.

An entry is ``CALLING_AE=INSTITUTION`` or ``CALLING_AE@ADDRESS=INSTITUTION``, where ADDRESS is
an IP address or a network (``10.1.2.0/24``). The institution a plan is filed and recorded
under is the one the allow-list gives, never the InstitutionName the files carry.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from rtqa.errors import RtqaError

AE_TITLE_MAX = 16


class AllowListError(RtqaError):
    """An allow-list entry that cannot be used (the CLI makes it a usage error)."""


@dataclass(frozen=True)
class AllowEntry:
    ae_title: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    institution: str

    def admits(self, ae_title: str, address: str) -> bool:
        if ae_title.strip() != self.ae_title:
            return False
        if self.network is None:
            return True
        try:
            return ipaddress.ip_address(address) in self.network
        except ValueError:
            return False


@dataclass(frozen=True)
class AllowList:
    entries: tuple[AllowEntry, ...]

    def institution(self, ae_title: str, address: str) -> str | None:
        """The institution of a calling AE title from an address, or None if not allowed.
        The first entry that admits the peer wins."""
        for e in self.entries:
            if e.admits(ae_title, address):
                return e.institution
        return None


def parse_allow_entry(text: str, *, where: str = "--allow") -> AllowEntry:
    """Parse ``CALLING_AE[@ADDRESS]=INSTITUTION``.

    Raises
    ------
    AllowListError
        No ``=``, an empty or too long AE title, an address that is not an IP address or
        network, or no institution.
    """
    who, sep, institution = text.partition("=")
    institution = institution.strip()
    if not sep or not institution:
        raise AllowListError(f"{where}: {text!r}: expected CALLING_AE=INSTITUTION or CALLING_AE@ADDRESS=INSTITUTION")
    ae, at, addr = who.partition("@")
    ae = ae.strip()
    if not ae or len(ae) > AE_TITLE_MAX or "\\" in ae:
        raise AllowListError(f"{where}: {text!r}: the calling AE title must be 1 to {AE_TITLE_MAX} characters")
    network = None
    if at:
        try:
            network = ipaddress.ip_network(addr.strip(), strict=False)
        except ValueError:
            raise AllowListError(f"{where}: {text!r}: {addr.strip()!r} is not an IP address or network") from None
    return AllowEntry(ae, network, institution)


def read_allow_file(path: str) -> list[AllowEntry]:
    """The entries of an allow-list file: one ``CALLING_AE[@ADDRESS]=INSTITUTION`` a line,
    ``#`` starts a comment, blank lines are ignored.

    Raises
    ------
    AllowListError
        The file cannot be read, or a line is not an entry (named by file and line).
    """
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AllowListError(f"--allow-file {path}: cannot be read ({exc})") from None
    out = []
    for n, line in enumerate(lines, start=1):
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(parse_allow_entry(line, where=f"{path}:{n}"))
    return out


def build_allow_list(entries: Iterable[AllowEntry]) -> AllowList:
    """The allow-list; an AE title (from the same addresses) given to two institutions is refused,
    since which institution a plan came from must never be a guess."""
    seen: dict[tuple[str, str], str] = {}
    kept = []
    for e in entries:
        key = (e.ae_title, str(e.network))
        if key in seen and seen[key] != e.institution:
            where = f" from {e.network}" if e.network else ""
            raise AllowListError(
                f"calling AE {e.ae_title!r}{where} is given to two institutions ({seen[key]!r} and {e.institution!r})"
            )
        seen[key] = e.institution
        kept.append(e)
    if not kept:
        raise AllowListError("no sender is allowed: give --allow CALLING_AE=INSTITUTION or --allow-file FILE")
    return AllowList(tuple(kept))
