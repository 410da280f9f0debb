"""A disagreement found by `python -m kernel_ref fuzz --seed wb1` (program wb1:25),
shrunk from 15 to 3 operations in 62 runs: log.

linux.uml's outcome is the golden capture next to it; replay both backends with
`python -m kernel_ref fuzz --replay kernel_ref/scenarios`.

The difference when it was saved:
    --- linux.uml boot 1 ubd log lines
    +++ ubdsim boot 1 ubd log lines
    @@ -0,0 +1,3 @@
    +I/O error, dev ubda, sector 2032 op 0x1:(WRITE) flags 0x800 phys_seg 2 prio class 2
    +Buffer I/O error on dev ubda, logical block 254, lost async page write
    +Buffer I/O error on dev ubda, logical block 255, lost async page write
"""

SCENARIOS = [{'name': 'fuzz-wb1-25',
  'about': 'fuzz wb1:25: log (3 ops)',
  'files': {'b0.img': {'kind': 'backing',
                       'size': 1047040,
                       'tag': 'B0',
                       'fill': 'sparse',
                       'mtime': 1600000000},
            'c0.cow': {'kind': 'mkcow', 'backing': 'b0.img'}},
  'options': ['ubd0=c0.cow,b0.img'],
  'boots': [{'guest': [{'op': 'fuzz',
                        'ops': [{'op': 'open',
                                 'slot': 0,
                                 'flags': ['O_WRONLY'],
                                 'path': '/dev/ubda'},
                                {'op': 'ioctl', 'slot': 0, 'name': 'BLKBSZSET', 'arg': 4096},
                                {'op': 'pwrite',
                                 'slot': 0,
                                 'len': 3584,
                                 'misalign': 0,
                                 'tag': 'W1.10',
                                 'off': 1042944}]}]}]}]
