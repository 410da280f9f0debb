"""NBD export of ubd units: the transport `ubdsim serve` and `ubdsim vm` use to let a real
kernel (a qemu guest) drive the simulated device model.

`protocol` holds the wire constants of the NBD protocol (doc/proto.md of the NBD project),
`extents` turns a unit's COW bitmap into `base:allocation` extents, `server` speaks the fixed
newstyle handshake and the transmission phase with asyncio.
"""
