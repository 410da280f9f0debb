"""A disagreement found by `python -m kernel_ref fuzz --seed long-wb` (program long-wb:47),
shrunk from 10 to 2 operations in 31 runs: out:writev[buffered]:errno.

linux.uml's outcome is the golden capture next to it; replay both backends with
`python -m kernel_ref fuzz --replay kernel_ref/scenarios`.

The difference when it was saved:
    --- linux.uml boot 1 guest output
    +++ ubdsim boot 1 guest output
    @@ -1,3 +1,3 @@
     1.1 open slot=0 path=/dev/ubda flags=O_RDWR = rc=0
    -1.2 writev slot=0 off=0 segs=0 = rc=0
    +1.2 writev slot=0 off=0 segs=0 = err=EPERM
     1 fuzz rc=0
"""

SCENARIOS = [{'name': 'fuzz-long-wb-47',
  'about': 'fuzz long-wb:47: out:writev[buffered]:errno (2 ops)',
  'files': {'r0.img': {'kind': 'backing',
                       'size': 512,
                       'tag': 'R0',
                       'fill': 'sparse',
                       'mtime': 1600000000}},
  'options': ['ubd0r=r0.img'],
  'boots': [{'guest': [{'op': 'fuzz',
                        'ops': [{'op': 'open',
                                 'slot': 0,
                                 'flags': ['O_RDWR'],
                                 'path': '/dev/ubda'},
                                {'op': 'writev',
                                 'slot': 0,
                                 'segs': [0],
                                 'misalign': 0,
                                 'tag': 'W1.2',
                                 'off': 0}]}]}]}]
