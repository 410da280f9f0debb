#!/usr/bin/env python3
"""`make demo`: the whole story of a ubd COW disk, told with the commands a user types.

 1. build a small ext2 image (guest_images/build_ext2.py, the same bytes on every run): the
    shared, read-only backing file;
 2. `ubdsim parse`: how kernel profile 2.4 (with the COW-resize patch) and 6.1 read
    `ubd0=guest.cow,base.img,16M`;
 3. `ubdsim run --kernel 2.4`: a guest writes a file into the filesystem through /dev/ubd0;
    the kernel creates the COW file on first open;
 4. `ubdsim info`: the header and the bitmap (which sectors now live in the COW file);
 5. `ubdsim moo` merges backing + COW into a new image: e2fsck and debugfs check it, and
    the backing file is unchanged;
 6. `ubdsim run ... ,16M`: the 2.4 resize patch grows the COW device, resize2fs grows the
    filesystem; uml_moo refuses the resized file (its header size no longer matches the
    backing file), `ubdsim moo` merges it into the grown disk as a 2.4 kernel reads it;
 7. the space the COW file saves (apparent vs allocated, as `ls -ls` shows);
 8. final act: `ubdsim vm --kernel 6.1`, a real Linux 6.1 in qemu. It refuses the resized
    COW file (Size mismatch: 6.1 has no resize patch), then mounts a fresh COW over the grown
    image, reads the guest's file and writes its own, which `ubdsim moo` merges and e2fsck
    checks.
Along the way `ubdsim show` draws what the acts talk about: the COW file after the guest's
write (act 4), before and after the resize (act 6), the 6.1 guest's COW file (act 8), as
terminal maps and as PNG pictures; at the end the lesson page `index.html` puts the acts,
their commands and output and the pictures on one self-contained page to project
(scripts/lesson_page.py).
Every step checks its result (exit status, expected text, the files themselves) and the demo
stops with one clear line and exit status 1 at the first step that does not behave.
Everything is written to demo-out/ (--out DIR elsewhere; removed by `make clean`);
--until N stops after act N (the page then has acts 1..N).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_EXT2 = os.path.join(ROOT, "guest_images", "build_ext2.py")
QEMU_BUILDER_DIR = os.path.join(ROOT, "guest_images", "qemu")
LESSON_PAGE = os.path.join(ROOT, "scripts", "lesson_page.py")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

NOTE = "Written by a guest through /dev/ubd0 (kernel profile 2.4).\n"
QEMU_NOTE = "Written by Linux 6.1 under qemu, through ubdsim vm.\n"
GROWN_SIZE = "16M"
GROWN_BYTES = 16 << 20

# Host programs the story runs; (program, what needs it). Checked before anything is written.
NEEDED = [("mke2fs", "building the guest image"), ("e2fsck", "checking the filesystems"),
          ("debugfs", "reading and writing files in the images"), ("resize2fs", "the resize act"),
          ("blockdev", "the resize act"), ("uml_moo", "the resize act (its refusal)"),
          ("sha256sum", "showing that backing files stay untouched"),
          ("qemu-system-x86_64", "the final act, Linux 6.1 in qemu,"),
          ("setpriv", "the final act (`ubdsim vm` runs qemu under it)")]
QEMU_MISSING_HINT = ("run `make setup` (it installs qemu-system-x86), or "
                     "`apt-get install --no-install-recommends qemu-system-x86`")

# e2fsprogs' version banners and e2fsck's "Pass N" lines say nothing the story needs.
ELIDED = re.compile(r"^((e2fsck|debugfs|resize2fs) \d+\.\d+\S* \(.*\)|Pass \d[a-z]?: .*)$")


def _load_lesson_page():
    """scripts/lesson_page.py by path (this file is also loaded by path, by the tests)."""
    spec = importlib.util.spec_from_file_location("ubdsim_lesson_page", LESSON_PAGE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module                # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


lesson_page = _load_lesson_page()
LESSON = lesson_page.Transcript()     # what the story told, for the lesson page
UNTIL = [8]                           # the last act to tell (--until)


class DemoFailed(Exception):
    """A step did not do what the story says: the message names the step and what was wrong."""


class StoryCut(Exception):
    """--until N: the act after N was reached; the story ends there, and the page with it."""


def act(title: str, *explanation: str) -> None:
    number = int(title.split(".", 1)[0])
    if number > UNTIL[0]:
        raise StoryCut(number)
    print(f"\n== {title}")
    for line in explanation:
        print(f"   {line}")
    LESSON.act(title, list(explanation))


def note(text: str) -> None:
    print(f"   -> {text}")
    LESSON.note(text)


class Shell:
    """Runs commands in the output directory and echoes them like a terminal session.

    stdout and stderr go through one pipe, so kernel messages (which ubdsim prints on stderr)
    appear where a terminal would show them. `ubdsim` is the venv's command when it exists
    (`make demo` runs with .venv/bin/python), else `python -m ubdsim` from this checkout."""

    def __init__(self, cwd: str) -> None:
        self.cwd = cwd
        bindir = os.path.dirname(sys.executable)
        def prepend(directory: str, variable: str) -> str:
            return os.pathsep.join(filter(None, [directory, os.environ.get(variable)]))

        self.env = dict(os.environ, PATH=prepend(bindir, "PATH"),
                        PYTHONPATH=prepend(ROOT, "PYTHONPATH"))
        found = shutil.which("ubdsim", path=self.env["PATH"])
        self.ubdsim = [found] if found else [sys.executable, "-m", "ubdsim"]

    def __call__(self, argv: list[str], *, status: int = 0, expect: Iterable[str] = (),
                 shown: str | None = None, keep: Callable[[str], bool] | None = None,
                 timeout: float = 120) -> str:
        """Run argv, stream its output (lines `keep` accepts; all but ELIDED by default),
        require exit `status` and every text of `expect` in the output; return the output."""
        what = shown or shlex.join(argv)
        print("$ " + what, flush=True)
        real = self.ubdsim + argv[1:] if argv[0] == "ubdsim" else argv
        keep = keep or (lambda line: not ELIDED.match(line))
        lines: list[str] = []
        shown_lines: list[str] = []
        try:
            process = subprocess.Popen(real, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, errors="replace")
        except FileNotFoundError:
            raise DemoFailed(f"`{what}`: {real[0]} is not installed") from None
        # A watchdog, not a read timeout: a silent hung command must end the demo too.
        # SIGTERM first: ubdsim then stops what it started (qemu, the traced guest).
        expired = threading.Event()

        def stop() -> None:
            expired.set()
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()

        watchdog = threading.Timer(timeout, stop)
        watchdog.start()
        with process:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                if keep(line.rstrip("\n")):
                    print(("   " + line).rstrip(), flush=True)
                    shown_lines.append(line.rstrip())
        watchdog.cancel()
        LESSON.command(what, shown_lines)
        if expired.is_set():
            raise DemoFailed(f"`{what}` did not finish in {timeout:.0f} s and was stopped")
        output = "".join(lines)
        if process.returncode != status:
            raise DemoFailed(f"`{what}` exited with status {process.returncode}, expected {status}")
        for text in expect:
            if text not in output:
                raise DemoFailed(f"`{what}` did not print {text!r}")
        return output


def picture(sh: Shell, out: str, argv: list[str], name: str, caption: str) -> None:
    """`ubdsim show ARGV --png NAME`: a picture for the lesson page, checked to be a PNG."""
    sh(["ubdsim", "show", *argv, "--png", name])
    path = os.path.join(out, name)
    with open(path, "rb") as f:
        if f.read(len(PNG_MAGIC)) != PNG_MAGIC:
            raise DemoFailed(f"`ubdsim show {' '.join(argv)} --png {name}` wrote no PNG picture")
    LESSON.picture(name, caption)


def allocated(path: str) -> int:
    return os.stat(path).st_blocks * 512


def kib(nbytes: int) -> str:
    return f"{nbytes // 1024} KiB"


def preflight() -> None:
    """Every tool the story uses, before anything is written: the final act must not turn
    into a silent skip on a machine without qemu."""
    for program, purpose in NEEDED:
        if shutil.which(program) is None:
            hint = QEMU_MISSING_HINT if program == "qemu-system-x86_64" else "run `make setup`"
            raise DemoFailed(f"'{program}' is not installed and {purpose} needs it: {hint}")


def guest_cache_state() -> str:
    """Whether the qemu guest (kernel + initramfs) is already built, in the builder's words."""
    sys.path.insert(0, QEMU_BUILDER_DIR)
    try:
        import build_image  # type: ignore[import-not-found]
        cached = build_image.cached_build()
        return (f"here it is already built ({cached}) and reused" if cached else
                "here it is not built yet: the first `ubdsim vm` below builds it into "
                f"{build_image.image_dir()} (it needs the Debian mirror)")
    finally:
        sys.path.remove(QEMU_BUILDER_DIR)


def story(out: str) -> None:
    sh = Shell(out)

    act("1. the backing file: a small ext2 image, the same bytes on every run",
        "Many guests can share one read-only disk image when each one writes into its own",
        "private COW file. This image plays the shared one; nobody will ever write to it.")
    sh([sys.executable, BUILD_EXT2, "base.img"],
       shown=f"python3 {min(os.path.relpath(BUILD_EXT2, out), BUILD_EXT2, key=len)} base.img")
    digest = sh(["sha256sum", "base.img"]).split()[0]
    sh(["debugfs", "-R", "ls -l /", "base.img"], expect=["etc", "home", "README"])

    act("2. the kernel command line, read by `ubdsim parse` as each kernel reads it",
        "ubd0=COW,BACKING[,SIZE]: unit 0 is guest.cow over base.img. With the 2.4 resize",
        "patch the third field is the device size; Linux 6.1 reads the same field as a serial.")
    sh(["ubdsim", "parse", "--kernel", "2.4", f"ubd0=guest.cow,base.img,{GROWN_SIZE}"],
       expect=[f"guest.cow  base.img  {GROWN_BYTES}"])
    sh(["ubdsim", "parse", "--kernel", "6.1", f"ubd0=guest.cow,base.img,{GROWN_SIZE}"],
       expect=[f"guest.cow  base.img  {GROWN_SIZE}"])

    act("3. a guest writes through /dev/ubd0 (kernel profile 2.4, no size yet)",
        "`ubdsim run` gives unmodified programs a /dev/ubd0 served by the driver's COW logic.",
        "guest.cow does not exist: the kernel creates it on first open, then every write",
        "lands in it and marks its sectors in the bitmap.")
    guest = (f'printf "{NOTE.rstrip()}\\n" > note.txt && '
             'debugfs -w -R "write note.txt /note.txt" /dev/ubd0 && '
             'e2fsck -fn /dev/ubd0 && debugfs -R "cat /note.txt" /dev/ubd0')
    sh(["ubdsim", "run", "--kernel", "2.4", "ubd0=guest.cow,base.img", "--", "sh", "-c", guest],
       expect=['Creating "guest.cow" as COW file for "base.img"', NOTE])

    act("4. what the COW file holds: `ubdsim info`",
        "The header names the backing file (absolute path, size, mtime: if base.img changes,",
        "every kernel refuses the COW file). The bitmap has one bit per 512-byte sector:",
        "set = read it from the COW file, clear = read it from base.img. 'marked' counts the",
        "sectors the guest wrote; the data area is a sparse file, holes where nothing was.",
        "Version 2 is the header a 2.4 kernel writes (it cannot read version 3, which",
        "uml_mkcow and Linux 6.1 write).")
    info = sh(["ubdsim", "info", "guest.cow"], expect=["present       yes", "size match    yes"])
    marked = re.search(r"marked\s+(\d+) ", info)
    if not marked or int(marked.group(1)) == 0:
        raise DemoFailed("`ubdsim info guest.cow` shows no marked sector after the guest wrote")
    marked_before = int(marked.group(1))
    note("`ubdsim show` draws the same file: the sector map (█ read from guest.cow, ░ from")
    note("base.img), the file to scale (H header, B bitmap, █ allocated, · holes) and a zoom")
    note("on its start, where header and bitmap are too small to see next to the data area")
    sh(["ubdsim", "show", "--width", "72", "guest.cow"],
       expect=["sector map: 16384 sectors of 512 B", "█", "░", "start of the file, bytes 0-"])
    picture(sh, out, ["guest.cow"], "guest-written.png",
            "guest.cow after the guest's write: the few sectors it holds, its header and bitmap, "
            "and base.img below it")
    before_resize = os.stat(os.path.join(out, "guest.cow")).st_size
    alloc_before_resize = allocated(os.path.join(out, "guest.cow"))

    act("5. merge: `ubdsim moo` writes backing + COW into a new standalone image",
        "Sectors marked in the bitmap come from guest.cow, the others from base.img.")
    sh(["ubdsim", "moo", "guest.cow", "merged.img"])
    sh(["e2fsck", "-fn", "merged.img"], expect=["/8192 blocks"])
    sh(["debugfs", "-R", "cat /note.txt", "merged.img"], expect=[NOTE])
    sh(["debugfs", "-R", "cat /note.txt", "base.img"], expect=["File not found by ext2_lookup"])
    sh(["sha256sum", "base.img"], expect=[digest])
    note("base.img is byte for byte what step 1 built: every write went to guest.cow")

    act(f"6. grow the disk: ubd0=guest.cow,base.img,{GROWN_SIZE} under the 2.4 resize patch",
        "On open, the patch grows the bitmap, moves the data area further into the file and",
        "marks every sector past the backing file's end (they can only come from the COW",
        "file). The device is 16 MiB now; resize2fs then grows the filesystem to fill it.")
    note("the resize rewrites guest.cow in place: keep a sparse copy to compare with")
    sh(["cp", "--sparse=always", "guest.cow", "before-resize.cow"])
    grown = sh(["ubdsim", "run", "--kernel", "2.4", f"ubd0=guest.cow,base.img,{GROWN_SIZE}", "--",
                "sh", "-c", "blockdev --getsize64 /dev/ubd0 && resize2fs /dev/ubd0 && "
                "e2fsck -fn /dev/ubd0"],
               expect=[f"{GROWN_BYTES}\n", "is now 16384 (1k) blocks long", "/16384 blocks"])
    resized = re.search(r"^\*\*\* Resizing cow file: (\d+) -> (\d+)$", grown, re.M)
    after_resize = os.stat(os.path.join(out, "guest.cow")).st_size
    if not resized or tuple(map(int, resized.groups())) != (before_resize, after_resize):
        raise DemoFailed(f"expected '*** Resizing cow file: {before_resize} -> {after_resize}'")
    info = sh(["ubdsim", "info", "guest.cow"],
              shown="ubdsim info guest.cow | grep -E '^ +(size|bitmap|data|marked) '",
              keep=lambda line: re.match(r"^ +(size|bitmap|data|marked) ", line) is not None,
              expect=[f"size          @4108  [   8 B]  {GROWN_BYTES}",
                      "size match    NO (file 8388608; grown by the 2.4 resize patch"])
    marked_after = int(re.search(r"marked\s+(\d+) ", info).group(1))
    past_end = (GROWN_BYTES - os.stat(os.path.join(out, "base.img")).st_size) // 512
    if marked_after < past_end + marked_before:
        raise DemoFailed(f"expected at least {past_end} + {marked_before} marked sectors after "
                         f"the resize, `ubdsim info` shows {marked_after}")
    note(f"bitmap and data area moved; marked: {past_end} sectors past base.img's end, "
         f"{marked_after - past_end} written by the guest so far")
    moved = "bytes further into the file"
    sh(["ubdsim", "show", "--compare", "--width", "80", "before-resize.cow", "guest.cow"],
       expect=["sector maps on one scale", "▓", moved, "resize tail   0 sectors -> "])
    picture(sh, out, ["--compare", "before-resize.cow", "guest.cow"], "resize.png",
            "before and after the resize, on one scale: the bitmap doubles, the data area moves "
            "further into the file, and the tail past base.img's end (▓ yellow) is marked")
    note("the header now says 16 MiB while base.img is 8 MiB: only a 2.4 kernel with the")
    note("resize patch accepts that (its tail is fully marked). uml_moo checks the sizes and")
    note("refuses; `ubdsim moo` merges it into the grown disk, as a 2.4 kernel reads it:")
    sh(["uml_moo", "guest.cow", "refused.img"], status=1,
       expect=["Size mismatch (16777216 vs 8388608) of COW header vs backing file"])
    sh(["ubdsim", "moo", "guest.cow", "grown.img"],
       expect=["COW file grown by the 2.4 resize patch: 8388608 -> 16777216 bytes"])
    sh(["e2fsck", "-fn", "grown.img"], expect=["/16384 blocks"])
    sh(["debugfs", "-R", "cat /note.txt", "grown.img"], expect=[NOTE])
    sh(["sha256sum", "base.img"], expect=[digest])

    act("7. the space the COW file saves",
        "`ls -ls`: the first column is the KiB allocated on disk, the size column the apparent",
        "size. A COW file holds only what its guest changed; the rest stays shared in base.img.")
    sh(["ls", "-ls", "base.img", "guest.cow", "merged.img", "grown.img"])
    cow_path = os.path.join(out, "guest.cow")
    merged_alloc, grown_alloc, cow_alloc = (allocated(os.path.join(out, name))
                                            for name in ("merged.img", "grown.img", "guest.cow"))
    if not (alloc_before_resize < merged_alloc
            and cow_alloc < grown_alloc < os.stat(cow_path).st_size):
        raise DemoFailed("expected each COW file to allocate less than a private copy of its disk")
    note(f"after step 3: guest.cow allocated {kib(alloc_before_resize)}, a private copy of that "
         f"8 MiB disk (merged.img) {kib(merged_alloc)}:")
    note(f"   {kib(merged_alloc - alloc_before_resize)} "
         f"({100 * (merged_alloc - alloc_before_resize) / merged_alloc:.0f}%) saved per guest")
    note(f"after the resize: guest.cow allocates {kib(cow_alloc)} for a 16 MiB disk, a private "
         f"copy (grown.img) {kib(grown_alloc)}:")
    note(f"   {kib(grown_alloc - cow_alloc)} ({100 * (grown_alloc - cow_alloc) / grown_alloc:.0f}%)"
         " saved; most of what guest.cow holds now is metadata resize2fs wrote for the new half")
    note(f"and every guest shares base.img's {kib(allocated(os.path.join(out, 'base.img')))}")

    act("8. final act: the same disks under a real Linux 6.1 kernel in qemu (`ubdsim vm`)",
        "`ubdsim vm` serves the ubd units over NBD and boots Debian's 6.1 kernel in qemu",
        "(software emulation) on them; the script runs in the guest, /dev/ubda is unit 0.",
        "The guest (the kernel .deb fetched by `apt-get download linux-image-amd64`, a",
        "busybox initramfs) is built on first use, in about 8 s, and cached;",
        f"{guest_cache_state()}.")
    with open(os.path.join(out, "mount.sh"), "w", encoding="ascii") as f:
        f.write("set -e\nmount -t ext2 /dev/ubda /mnt\ncat /mnt/note.txt\ndf -k /mnt\n"
                f"echo '{QEMU_NOTE.rstrip()}' > /mnt/from-qemu.txt\numount /mnt\n"
                "echo unmounted cleanly\n")
    sh(["cat", "mount.sh"])
    note("first the resized guest.cow: Linux 6.1 has no resize patch and refuses it")
    sh(["ubdsim", "vm", "--kernel", "6.1", "ubd0=guest.cow,base.img", "--", "mount.sh"],
       status=1, timeout=600,
       expect=["Size mismatch (16777216 vs 8388608) of COW header vs backing file",
               "ubda: Can't open \"guest.cow\": errno = 22"])
    note("then a fresh COW file over the grown image, which becomes the new shared backing file")
    grown_digest = sh(["sha256sum", "grown.img"]).split()[0]
    sh(["ubdsim", "vm", "--kernel", "6.1", "ubd0=qemu.cow,grown.img", "--", "mount.sh"],
       timeout=600, expect=['Creating "qemu.cow" as COW file for "grown.img"', NOTE,
                            "16057", "unmounted cleanly", "ubdsim-guest-status: 0"])
    sh(["ubdsim", "moo", "qemu.cow", "final.img"])
    sh(["e2fsck", "-fn", "final.img"], expect=["/16384 blocks"])
    sh(["debugfs", "-R", "cat /from-qemu.txt", "final.img"], expect=[QEMU_NOTE])
    sh(["debugfs", "-R", "cat /from-qemu.txt", "grown.img"],
       expect=["File not found by ext2_lookup"])
    sh(["sha256sum", "grown.img"], expect=[grown_digest])
    sh(["ls", "-ls", "grown.img", "qemu.cow", "final.img"])
    note("the 6.1 kernel's writes are all in qemu.cow; grown.img is untouched")
    picture(sh, out, ["qemu.cow"], "qemu-cow.png",
            "qemu.cow, written by Linux 6.1: a version 3 header (bitmap aligned at 8192), the "
            "sectors the 6.1 guest wrote, and grown.img, now the shared backing file, below it")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "demo-out"),
                        help="output directory (emptied first; default demo-out/)")
    parser.add_argument("--until", type=int, choices=range(1, 9), default=8, metavar="N",
                        help="stop after act N (1-8; default 8: the whole story)")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    UNTIL[0] = args.until
    LESSON.acts.clear()
    started = time.monotonic()
    try:
        preflight()
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        print(f"demo: working in {out} (e2fsprogs version banners and e2fsck's 'Pass N' "
              "lines are left out)")
        try:
            story(out)
        except StoryCut:
            pass
        LESSON.summary = (f"Acts 1 to {args.until} of 8" if args.until < 8 else "All 8 acts") + \
            f" of the demo, run in {time.monotonic() - started:.0f} s; every step checked its result."
        page = lesson_page.write_page(LESSON, out)
    except DemoFailed as failed:
        print(f"\ndemo: FAILED: {failed}", file=sys.stderr)
        return 1
    print(f"\ndemo: lesson page {page}: the acts with their commands, output and "
          f"{len(LESSON.pictures)} pictures, self-contained (open it in a browser to project)")
    which = "every step" if args.until == 8 else f"acts 1-{args.until} (--until {args.until}): every step"
    print(f"\ndemo: {which} checked out ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
