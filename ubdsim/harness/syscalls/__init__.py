"""Per-family system call handlers and the table that wires them (strace syscallent.h idea)."""
