"""`ubdsim vm`: a real Linux kernel, under qemu (TCG), using the ubd units as virtio disks.

`image` builds/locates the cached kernel + initramfs (guest_images/qemu/build_image.py),
`qemu` builds the qemu command line and runs the guest with its console streamed and every
process cleaned up on every exit path; the NBD transport is ubdsim.nbd, in this process.
"""
