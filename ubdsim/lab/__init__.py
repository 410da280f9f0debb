"""The corruption lab: record what the device model did, show it, replay it, crash it.

This package owns the lab's event log (its format, versioned, is `docs/lab-log-format.md`):
a listener on the device model's EventBus (`ubdsim.device.events`) turns every event into
one record (guest requests with a hash of their data, the driver's segments and bitmap
write-backs, every host write of a unit's file with its bytes, opens, creations, switches,
resizes, closes, kernel messages, and the marks a guest sets with `ubdsim mark`), which go
to a log file (`--record`), to a human or JSON-lines trace (`--trace`), or both: one event
format for both. From a log it rebuilds the host files as they were after any number of host
writes (`replay`), and it enumerates the crash states a process crash or a power cut could
have left (`crash`), builds the guest-visible device of each and runs the user's checker on
it. It only listens: the device model behaves the same with or without it, and a bus nobody
asked to record keeps skipping its I/O events. Unit files are never opened for writing here,
and never opened and closed while the device holds its fcntl locks on them (see `hostfiles`).
Its one active part, `--inject SPEC` (`inject_spec`, `inject`), makes chosen host calls of the
units fail, tear or stop the world, as the kernel's host would, and logs each fault.
"""
