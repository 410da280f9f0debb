"""Setup steps several scenarios share (not a scenario: the catalogue skips `_` modules)."""
from ..model import sh

OLD = 1_000_000_000      # the backing files' mtime: what the COW headers record

# An 8 MiB ext4 image holding f.txt, with a fixed mtime, as the shared backing file.
EXT4_BASE = sh("an 8 MiB ext4 backing file base.img holding f.txt (mtime fixed)",
               "truncate -s 8M base.img && mkfs.ext4 -q -F base.img && seq 2000 > f.txt && "
               "debugfs -w -R 'write f.txt f.txt' base.img 2>/dev/null && "
               f"touch -d @{OLD} base.img")


def cows(*names: str) -> str:
    """mkcow of each name over base.img, in the header version the profile reads."""
    return " && ".join(f"{{ubdsim}} mkcow --kernel {{kernel}} {n} base.img >/dev/null" for n in names)


FSCK = "e2fsck -fn {dev}"
