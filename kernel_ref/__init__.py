"""kernel_ref: the differential suite that makes the real UML kernel ubdsim's judge.

Each scenario (data in kernel_ref/scenarios/) runs on Debian's linux.uml 6.1 and on
`ubdsim run --kernel 6.1` in the same directory; the ubd driver's log lines, the guest's
transcript and exit status, and every file's bytes and holes are compared. Golden captures
of the kernel's outcomes (kernel_ref/golden/) tell a kernel package change from a ubdsim
change. Usage: `python -m kernel_ref --help`.
"""
