"""The ubd device model: what the driver does between the command line and a served sector.

Front ends (the guest harness, the NBD server, tools) use it like this::

    from ubdsim.cmdline.parse import parse_command_line      # -> ParseResult
    from ubdsim.device.disk import boot_disks
    from ubdsim.device.open import open_unit
    from ubdsim.device.events import EventBus

    bus = EventBus(lambda ev: log(ev.data["text"]), kinds={"message"})  # or EventBus()
    disks, messages, failures = boot_disks(parsed.units, profile, bus)
    # disks:    {n: Disk} registered disks, closed again after the boot's partition scan
    # messages: the kernel log lines of the boot, in print order (also sent as events)
    # failures: {n: UbdError} with .errno and .printed (the lines that unit printed)
    unit = disks[0].open()     # ubd_open(): at count 0 the files are (re)opened; UbdError
    disks[0].release()         # ubd_release(): at count 0 the files are closed

    unit = open_unit(UnitSpec(0, "cow.img", "backing.img"), profile)   # one unit; raises UbdError
    unit.read(off, n) / unit.write(off, data) / unit.discard(off, n) / unit.write_zeroes(off, n)
    unit.flush() / unit.close()          # also a context manager
    unit.size, unit.readonly, unit.messages, unit.cow (None for raw), unit.backing_path

Modules: `disk` (ubd_add/ubd_open/ubd_release: when a unit's files are open),
`open` (ubd_file_size, ubd_open_dev/open_ubd_file: sizing, creation, switch, checks, locks),
`unit` (the I/O path: cowify + do_io + update_bitmap), `resize` ([resize] patch),
`locking` (fcntl locks, 6.1), `events` (structured events), `hostio` (the host calls with
the kernel's short-I/O rules), `api` (the BlockDevice protocol front ends code against).
"""
