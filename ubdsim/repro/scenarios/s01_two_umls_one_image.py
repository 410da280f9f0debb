"""Two UMLs on one image: 2.4 lets both write (the file system is corrupted), 6.1 refuses."""
from ..model import Scenario, guest, join, sh

_FS = sh("an 8 MiB ext4 image, and two small files to write into it",
         "truncate -s 8M disk.img && mkfs.ext4 -q -F disk.img && echo aaa > a.txt && echo bbb > b.txt")
# Guest A opens the file system (debugfs reads its bitmaps and root directory), dumps the
# root inode into `ready` to say so, and writes only once `go` exists: by then guest B has
# written through the same image.
_A = ("{ echo 'dump_inode <2> ready'; while [ ! -e go ]; do sleep 0.1; done; "
      "echo 'write a.txt a.txt'; } | debugfs -w {dev}")
_B = "printf 'mkdir d\\nwrite b.txt d/b.txt\\n' | debugfs -w -f - {dev}"

SCENARIO = Scenario(
    name="two-umls-one-image",
    title="two UMLs on one image: 2.4 corrupts it, 6.1 refuses the second",
    profiles=("2.4", "2.4-stock", "6.1"),
    explain={
        "6.1": "[6.1] open_ubd_file() locks every file it opens with a whole-file fcntl(F_SETLK) "
               "(os_lock_file(): F_WRLCK when writable), so the second kernel's open of disk.img "
               "fails with 'F_SETLK failed, file already locked by pid N' and 'Failed to lock', "
               "errno 11: its unit does not open and the image stays consistent. Flag c "
               "(shared) turns that lock off, and with it the protection.",
        "*": "[2.4] ubd_open_dev() takes no host lock at all, so two kernels open the same raw "
             "image read-write. Each caches the file system's metadata: guest A read the block "
             "bitmap, inode table and root directory before guest B created d/b.txt, then wrote "
             "its own stale copies back with a.txt. B's directory is gone (a.txt took B's inode "
             "12), and e2fsck finds the root's link count wrong (exit 4). Give each guest its "
             "own COW file over the shared image: the backing file is only ever read.",
    },
    setup=(_FS,),
    damage=(
        guest("guest A opens the image and waits", "ubd0=disk.img", _A, background="A"),
        guest("guest B writes d/b.txt into the same image meanwhile", "ubd0=disk.img", _B,
              profiles=("2.4", "2.4-stock")),
        guest("guest B tries the same image: refused", "ubd0=disk.img",
              "dd if={dev} of=/dev/null bs=512 count=1", expect=1,
              shows=("F_SETLK failed, file already locked by pid", "Failed to lock '"),
              profiles=("6.1",)),
        sh("guest A may go on", "touch go"),
        join("guest A writes a.txt from its stale view", "A"),
        sh("e2fsck on the image: the directory B made is lost", "e2fsck -fn disk.img", expect=4,
           shows=("Inode 2 ref count is 4, should be 3",), profiles=("2.4", "2.4-stock")),
        sh("d/b.txt is not there", "debugfs -R 'ls -l' disk.img", hides=(" d\n", "b.txt"),
           shows=("a.txt",), profiles=("2.4", "2.4-stock")),
        sh("e2fsck on the image: clean, A's a.txt only", "e2fsck -fn disk.img", profiles=("6.1",)),
    ),
    safe=(
        sh("one COW file per guest over the shared image",
           "{ubdsim} mkcow --kernel {kernel} a.cow disk.img && {ubdsim} mkcow --kernel {kernel} b.cow disk.img"),
        guest("guest A on its own COW file waits", "ubd0=a.cow,disk.img", _A, background="A"),
        guest("guest B on its own COW file writes d/b.txt", "ubd0=b.cow,disk.img", _B),
        sh("guest A may go on", "touch go"),
        join("guest A writes a.txt", "A"),
        guest("B's disk is clean and has d/b.txt", "ubd0=b.cow,disk.img",
              "e2fsck -fn {dev} && debugfs -R 'cat d/b.txt' {dev}", shows=("bbb",)),
        guest("A's disk is clean and has a.txt", "ubd0=a.cow,disk.img",
              "e2fsck -fn {dev} && debugfs -R 'cat a.txt' {dev}", shows=("aaa",)),
        sh("the shared image itself was never written", "e2fsck -fn disk.img && "
           "debugfs -R 'ls' disk.img", hides=("a.txt", "b.txt")),
    ),
)
