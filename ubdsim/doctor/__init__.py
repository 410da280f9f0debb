"""The image doctor: what can be wrong with a UML COW file, how to tell, and what is safe to fix.

uml-utilities can create and merge COW files and nothing else; qemu-img checks its own
formats but has no UML COW driver and is blind to data. This package owns the rules: every
finding `ubdsim check` can report (a stable id, a severity, the sectors or bytes involved,
and the kernel behaviour behind it), and every narrow repair `ubdsim repair` may make for
one of them (crash-safe, followed by a new check, never one that hides damage). The
operations `ubdsim/ops/check.py` and `repair.py` run these rules; the commands stay thin.
"""
