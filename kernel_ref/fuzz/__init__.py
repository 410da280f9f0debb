"""Differential fuzzing of ubdsim against the real kernel (`python -m kernel_ref fuzz`).

Why: the scenario suite (kernel_ref/scenarios) checks the behaviours someone thought of; a
fuzzer finds the ones nobody did. Each program comes from a seed (generator.py): units of
random kinds and sizes, then guest operations that a small Python runner performs in the
guest (guest_runner.py, one output line per operation). It runs on linux.uml, the judge, and
on `ubdsim run --kernel 6.1` (execute.py); result lines, the ubd driver's log lines, the exit
status and the final files byte for byte (kernel_ref's masking included) are compared. A
disagreement is shrunk to a minimal program (shrink.py), and with --save-scenarios written as
scenario data with the kernel's golden capture (save.py), replayed by `fuzz --replay`.
"""
