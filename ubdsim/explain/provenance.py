"""Where each behaviour explain describes comes from: a running kernel, a reconstruction, or ubdsim.

Every sentence explain prints names one behaviour of this table. Its provenance for a profile
is decided by data, never by the profile's name:
- `scope="ubdsim"`: ubdsim's own rule or text (a refusal standing in for a kernel crash, the
  resize patch's lost messages, explain's advice): no kernel behaviour behind it;
- `scope="resize"`: the 2003 COW-resize patch (DeviceRules.resize_patch), which is lost: its
  behaviour is reconstructed from its author's descriptions (ubd-behaviour.md section 4);
- `scope="driver"`: the ubd driver itself: checked against a running kernel where the profile
  has one here (Profile.has_oracle: Debian's linux.uml), otherwise reconstructed from the
  driver's sources and descriptions (the 2.4 profiles: no 2.4 kernel runs here).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..messages import MESSAGES
from ..messages.device import UBDSIM_TEXTS
from ..profiles import Profile

LINUX_UML = "linux.uml"           # checked against the running kernel (the oracle)
RECONSTRUCTED = "reconstructed"   # from the driver's sources and descriptions
UBDSIM = "ubdsim"                 # ubdsim's own (no kernel behaviour behind it)

LABELS = {LINUX_UML: "checked against linux.uml",
          RECONSTRUCTED: "reconstructed from sources and descriptions",
          UBDSIM: "ubdsim's own"}


@dataclass(frozen=True)
class Behaviour:
    id: str
    what: str           # the behaviour, in a few words
    source: str         # the kernel code behind it ("ubdsim" for ubdsim's own)
    scope: str = "driver"   # "driver" | "resize" | "ubdsim"


@dataclass(frozen=True)
class Provenance:
    kind: str           # LINUX_UML | RECONSTRUCTED | UBDSIM
    text: str

    def as_dict(self) -> dict:
        return asdict(self)


def _b(id: str, what: str, source: str, scope: str = "driver") -> tuple[str, Behaviour]:
    return id, Behaviour(id, what, source, scope)


BEHAVIOURS: dict[str, Behaviour] = dict([
    _b("cmdline.parse", "how the ubd options are cut and parsed",
       "ubd_kern.c ubd_setup()/ubd_setup_common(), init/main.c, kernel/params.c"),
    _b("cmdline.rejected", "a malformed option only prints and leaves the unit unconfigured",
       "ubd_kern.c ubd_setup()"),
    _b("cmdline.root_fs", "unit 0 gets root_fs when nothing configured it", "ubd_kern.c ubd0_init()"),
    _b("cmdline.third_size", "the third field is a size (the COW-resize patch)",
       "ubd_kern.c ubd_setup() [resize patch]", "resize"),
    _b("cmdline.third_serial", "the third field is the disk's serial", "ubd_kern.c ubd_setup_common()"),
    _b("cmdline.backing_rest", "everything after the first comma is the backing file's name",
       "ubd_kern.c ubd_setup() [2.4]"),
    _b("cmdline.too_long", "a command line too long for COMMAND_LINE_SIZE: UML exits",
       "um_arch.c add_arg()"),
    _b("size", "the device's size comes from the backing file", "ubd_kern.c ubd_file_size()/ubd_add()"),
    _b("size.none", "no size can be found: no disk", "ubd_kern.c ubd_add()"),
    _b("create", "a missing COW file is created over the backing file",
       "ubd_kern.c create_cow_file(), cow_user.c write_cow_header()/init_cow_file()"),
    _b("create.failed", "creating the COW file fails", "ubd_kern.c create_cow_file()"),
    _b("create.readonly", "a read-only unit's COW file is left empty (header write: EBADF)",
       "ubd_kern.c create_cow_file(), cow_user.c write_cow_header()"),
    _b("raw", "a file without a readable COW header and no backing file is used raw",
       "ubd_kern.c open_ubd_file()"),
    _b("raw.flag_d", "flag d: the file is never probed for a COW header", "ubd_kern.c open_ubd_file()"),
    _b("raw.unreadable_cow", "a COW file this kernel cannot read, named alone, is used raw",
       "cow_user.c read_cow_header(), ubd_kern.c open_ubd_file()"),
    _b("cow", "a COW file over the backing file its header names", "ubd_kern.c open_ubd_file()"),
    _b("switch", "a different backing file with the header's size and mtime: the header is rewritten",
       "ubd_kern.c path_requires_switch()/open_ubd_file(), cow_user.c write_cow_header()"),
    _b("switch.damage", "a switch that writes another header version over the old bitmap",
       "ubd_kern.c open_ubd_file(), cow_user.c write_cow_header()"),
    _b("switch.unstatable", "what a header path that cannot be stat'ed means for the switch",
       "ubd_kern.c path_requires_switch()"),
    _b("switch.refused", "a different backing file without the header's size or mtime: no switch",
       "ubd_kern.c open_ubd_file(), backing_file_mismatch()"),
    _b("switch.failed", "the header rewrite of a switch fails", "ubd_kern.c open_ubd_file()"),
    _b("refuse.header", "a file without a readable COW header, with a backing file named: refused",
       "ubd_kern.c open_ubd_file()"),
    _b("refuse.size", "the header's size differs from the backing file's: refused",
       "ubd_kern.c backing_file_mismatch()"),
    _b("refuse.mtime", "the header's mtime differs from the backing file's: refused",
       "ubd_kern.c backing_file_mismatch()"),
    _b("refuse.backing", "the backing file cannot be found or opened: refused",
       "ubd_kern.c backing_file_mismatch()/ubd_open_dev()"),
    _b("refuse.open", "the file cannot be opened at all", "ubd_kern.c ubd_open_dev()"),
    _b("refuse.locked", "another process holds the file locked: refused",
       "ubd_kern.c open_ubd_file(), os-Linux/file.c os_lock_file()"),
    _b("refuse.vmalloc", "an empty backing file gives a 0-byte bitmap: refused",
       "ubd_kern.c ubd_open_dev()"),
    _b("refuse.sectorsize", "sector size 0 in the header: refused instead of a divide error",
       "ubdsim (cow_user.c cow_sizes() divides by it)", "ubdsim"),
    _b("not_a_disk", "a file that is not a regular file or block device", "ubdsim", "ubdsim"),
    _b("lock", "whole-file fcntl locks on the files the unit opens", "ubd_kern.c open_ubd_file()"),
    _b("lock.none", "no host locks at all", "ubd_kern.c open_ubd_file()"),
    _b("lock.shared", "flag c: no host locks for this unit", "ubd_kern.c open_ubd_file()"),
    _b("readonly.fallback", "EROFS/EACCES on a writable open: the unit becomes read-only",
       "ubd_kern.c open_ubd_file()"),
    _b("readonly", "what a guest's writes to a read-only unit get", "ubd_kern.c ubd_open()"),
    _b("resize", "the size field grows the COW file", "ubd_kern.c [resize patch]", "resize"),
    _b("resize.same", "the size field equals the COW file's size: nothing happens",
       "ubd_kern.c [resize patch]", "resize"),
    _b("resize.refused", "a shrink, a read-only unit or a hard-linked file is not grown",
       "ubdsim's rules for the lost patch", "ubdsim"),
    _b("resize.ignored", "the size field of a unit that is not a COW unit does nothing",
       "ubd_kern.c [resize patch]", "resize"),
    _b("grown", "a COW file grown past its backing file by the resize patch",
       "ubd_kern.c backing_file_mismatch() [resize patch]", "resize"),
    _b("not_scanned", "an empty disk is registered but not opened at boot",
       "block/genhd.c disk_scan_partitions()"),
    _b("stacking", "a backing file is opened raw, never probed for a COW header",
       "ubd_kern.c ubd_open_dev(): open_ubd_file(..., NULL)"),
    _b("unpredicted", "a failure explain does not predict", "ubdsim", "ubdsim"),
    _b("advice", "explain's reading of the situation and its fix", "ubdsim", "ubdsim"),
])


def provenance(behaviour_id: str, profile: Profile | None) -> Provenance:
    """The provenance of one behaviour under `profile` (None: not tied to a profile)."""
    behaviour = BEHAVIOURS[behaviour_id]
    if behaviour.scope == "ubdsim" or profile is None:
        return Provenance(UBDSIM, LABELS[UBDSIM])
    if behaviour.scope == "resize":
        return Provenance(RECONSTRUCTED, "reconstructed from the descriptions of the COW-resize "
                                         "patch, which is lost")
    if profile.has_oracle:
        return Provenance(LINUX_UML, LABELS[LINUX_UML])
    return Provenance(RECONSTRUCTED, LABELS[RECONSTRUCTED] + " (no such kernel runs here)")


def line_provenance(msg_id: str, profile: Profile) -> str:
    """Whether a kernel line's text is the kernel's own (the profile's provenance) or ubdsim's
    (messages whose source says `ubdsim's text`)."""
    if msg_id in UBDSIM_TEXTS or "ubdsim's text" in MESSAGES[msg_id].source:
        return UBDSIM
    if "[resize patch]" in MESSAGES[msg_id].source:
        return RECONSTRUCTED
    return LINUX_UML if profile.has_oracle else RECONSTRUCTED


@dataclass(frozen=True)
class ProfileProvenance:
    """A profile's provenance as a whole: its driver, and the COW-resize patch where it has it."""

    kind: str
    text: str
    parts: dict[str, str]

    def as_dict(self) -> dict:
        return asdict(self)


def profile_provenance(profile: Profile) -> ProfileProvenance:
    driver = LINUX_UML if profile.has_oracle else RECONSTRUCTED
    parts = {"driver": driver}
    text = ("the driver checked against a running kernel, linux.uml" if profile.has_oracle else
            "the driver reconstructed from its sources and descriptions (no such kernel runs here)")
    if profile.device.resize_patch:
        parts["resize patch"] = RECONSTRUCTED
        text += "; the COW-resize patch reconstructed from its author's descriptions (it is lost)"
    return ProfileProvenance(kind=driver, text=text, parts=parts)


__all__ = ["BEHAVIOURS", "Behaviour", "LABELS", "LINUX_UML", "Provenance", "ProfileProvenance",
           "RECONSTRUCTED", "UBDSIM", "line_provenance", "profile_provenance", "provenance"]
