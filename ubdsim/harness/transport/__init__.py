"""How guest system calls reach the handlers: seccomp filter + ptrace (x86_64)."""
