"""Regenerate tests/cmdline/data/oracle_6_1.json by booting linux.uml on the corpus.

Run from the repository root:  .venv/bin/python -m tests.cmdline.capture_oracle
The JSON keeps every boot's words and the kernel's lines (non-UTF-8 bytes are stored
surrogateescape'd, i.e. as \\udcXX escapes), so the offline test can compare ubdsim with what
the kernel printed even where linux.uml is slow to run, and the live test can notice when the
installed kernel starts printing something else.
"""
from __future__ import annotations

import json
import pathlib
import subprocess

from .corpus_6_1 import ALL_BOOTS
from .oracle import boot_all, boot_words, require_linux_uml

DATA = pathlib.Path(__file__).with_name("data") / "oracle_6_1.json"


def kernel_version(linux: str) -> str:
    done = subprocess.run([linux, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def main() -> None:
    linux = require_linux_uml()
    captures = boot_all([boot_words(sets) for sets, _ in ALL_BOOTS], [files for _, files in ALL_BOOTS])
    record = {
        "kernel": kernel_version(linux),
        "boots": [{"sets": [{"name": name, "words": words} for name, words in sets], "files": files,
                   **capture.as_json()}
                  for (sets, files), capture in zip(ALL_BOOTS, captures)],
    }
    DATA.parent.mkdir(exist_ok=True)
    DATA.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {DATA}: {len(ALL_BOOTS)} boots, {sum(len(sets) for sets, _ in ALL_BOOTS)} option sets")


if __name__ == "__main__":
    main()
