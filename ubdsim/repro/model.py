"""The scenario format: what a scenario is made of, as plain frozen data.

A scenario is a title, the profiles it supports (the first is the default), setup steps, the
damage steps, the safe way's steps and a few sentences of explanation per profile. A step is
either a host shell command (real tools and ubdsim's own commands) or a guest script run on
the configured units by the guest backend, or the join of a guest started in the background.
Each step says what it must show: the exit status (or statuses) and text that must (or must
not) appear in its output. A step is "met" when all of that holds; a scenario reproduces its
damage when every damage step is met, and its safe way is clean when every safe step is.

Commands are sh text with four placeholders, replaced as plain text (shell braces stay as
they are): {ubdsim} (this ubdsim), {python} (this Python), {dev} (the guest's device node:
/dev/ubd0 under 2.4, /dev/ubda under 6.1) and {kernel} (the profile's name).
"""
from __future__ import annotations

from dataclasses import dataclass, field

PROFILES = ("2.4", "2.4-stock", "6.1")


@dataclass(frozen=True)
class Guest:
    """A guest script run on `options` (the kernel's ubd words). `background` names a guest
    that keeps running while later steps do; it must create the file `ready` once it has the
    device open, and a later join step with the same name waits for it."""
    options: tuple[str, ...]
    script: str
    background: str | None = None
    ready: str | None = None


@dataclass(frozen=True)
class Step:
    say: str                                   # one line: what the step does, and why
    run: str = ""                              # host shell command
    guest: Guest | None = None                 # or a guest script
    join: str | None = None                    # or the end of a background guest
    expect: tuple[int, ...] | None = (0,)      # statuses that count (None: any)
    shows: tuple[str, ...] = ()                # text the output must contain
    hides: tuple[str, ...] = ()                # text it must not contain
    same: bool = False                         # output must be the same under every backend
    profiles: tuple[str, ...] | None = None    # only under these profiles (None: all)

    def applies(self, profile: str) -> bool:
        return self.profiles is None or profile in self.profiles

    @property
    def kind(self) -> str:
        return "guest" if self.guest else "join" if self.join else "host"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    profiles: tuple[str, ...]
    explain: dict[str, str]                    # profile (or "*") -> a few sentences
    damage: tuple[Step, ...]
    safe: tuple[Step, ...]
    setup: tuple[Step, ...] = ()
    cleanup: tuple[str, ...] = ()              # host commands always run at the end (umount)
    oracle_steps: bool = True                  # every guest step can run under linux.uml too
    module: str = field(default="", compare=False)

    def explanation(self, profile: str) -> str:
        return self.explain.get(profile, self.explain.get("*", ""))


def sh(say: str, run: str, expect: int | tuple[int, ...] | None = 0, **kw) -> Step:
    """A host step; `expect` may be one status."""
    return Step(say=say, run=run, expect=_statuses(expect), **kw)


def guest(say: str, options: list[str] | str, script: str,
          expect: int | tuple[int, ...] | None = 0, background: str | None = None,
          ready: str | None = None, **kw) -> Step:
    """A guest step on the kernel words `options`."""
    words = (options,) if isinstance(options, str) else tuple(options)
    return Step(say=say, guest=Guest(words, script, background, ready),
                expect=_statuses(expect), **kw)


def join(say: str, name: str, expect: int | tuple[int, ...] | None = 0, **kw) -> Step:
    return Step(say=say, join=name, expect=_statuses(expect), **kw)


def _statuses(expect: int | tuple[int, ...] | None) -> tuple[int, ...] | None:
    return (expect,) if isinstance(expect, int) else expect
