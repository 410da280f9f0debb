"""Kernel profiles: the only place in ubdsim that knows which kernel era does what.

A profile is a frozen row of data; code asks the row (`profile.cow.created_version`), never
`if profile.name == ...` (the proot "kompat" / gVisor syscall-table idea). Each area keeps its
rule record in its own module of this package:

- `format_rules`  which COW header versions a kernel reads and writes (cow_user.c)
- `cmdline_rules` how ubd_setup()/ubd_setup_common() parse `ubd` options (ubd_kern.c)
- `device_rules`  how a unit is opened and served (ubd_kern.c open_ubd_file(), do_io(), ...)

Adding a profile (say 2.6.21) means adding one row here and, where it differs, one rule
record in each area module.
"""
from __future__ import annotations

from dataclasses import dataclass

from .cmdline_rules import CMDLINE_2_4_RESIZE, CMDLINE_2_4_STOCK, CMDLINE_6_1, CmdlineRules
from .device_rules import DEVICE_2_4_RESIZE, DEVICE_2_4_STOCK, DEVICE_6_1, DeviceRules
from .format_rules import FORMAT_2_4, FORMAT_6_1, FormatRules

__all__ = ["Profile", "PROFILES", "DEFAULT_PROFILE", "get_profile", "UnknownProfile"]


@dataclass(frozen=True)
class Profile:
    """One kernel the simulator can behave as."""

    name: str
    summary: str
    kernel_family: str          # key into ubdsim.messages: profiles sharing a driver share texts
    has_oracle: bool            # True when a real kernel of this profile runs here (linux.uml)
    format: FormatRules
    cmdline: CmdlineRules
    device: DeviceRules


PROFILES: dict[str, Profile] = {
    "2.4": Profile(
        name="2.4",
        summary="2.4.20-4um (2003) with the COW-resize patch: third field of ubdN= is a size",
        kernel_family="2.4", has_oracle=False,
        format=FORMAT_2_4, cmdline=CMDLINE_2_4_RESIZE, device=DEVICE_2_4_RESIZE),
    "2.4-stock": Profile(
        name="2.4-stock",
        summary="2.4.20-4um without the resize patch",
        kernel_family="2.4", has_oracle=False,
        format=FORMAT_2_4, cmdline=CMDLINE_2_4_STOCK, device=DEVICE_2_4_STOCK),
    "6.1": Profile(
        name="6.1",
        summary="Debian's linux.uml 6.1: the modern driver (the oracle installed here)",
        kernel_family="6.1", has_oracle=True,
        format=FORMAT_6_1, cmdline=CMDLINE_6_1, device=DEVICE_6_1),
}

DEFAULT_PROFILE = "2.4"


class UnknownProfile(ValueError):
    pass


def get_profile(name: str | None = None) -> Profile:
    """The profile called `name` (the default profile when None)."""
    key = DEFAULT_PROFILE if name is None else name
    try:
        return PROFILES[key]
    except KeyError:
        raise UnknownProfile(f"unknown kernel profile {key!r} (choose from {', '.join(PROFILES)})") from None
