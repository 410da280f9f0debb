"""`ubdsim serve` with several connections at once (NBD_FLAG_CAN_MULTI_CONN), and the
transmission phase's buffers: each connection has its own thread and receives write pieces
into one buffer it reuses, except when the unit's events are on (--record), whose log keeps
the bytes it is shown.

Oracles: libnbd (python3-libnbd under /usr/bin/python3) drives the connections, qemu-img
convert reads the whole export back, uml_moo merges the COW file, `ubdsim replay` rebuilds it
from the --record log; all are compared with an independent byte model (kernel 2.4, whose
reads return the file bytes: see test_serve_limits.py).
"""
from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

from .serving import UBDSIM, serve
from .test_serve import moo
from .test_serve_limits import LIBNBD_PYTHON, MIB, digest, libnbd

SIZE = 24 * MIB

# Requests from argv[2] (JSON: [connection, offset, length, seed] writes), each on its own
# connection, each followed by a flush on the next connection and a read of the same range
# on the one after it (printed as sha256); then every connection writes one range of its
# own at the same time (threads), and each connection reads the whole export (sha256).
MULTI = r"""
import hashlib, json, random, threading
uri, plan = sys.argv[1], json.loads(sys.argv[2])
handles = []
for n in range(4):
    h = nbd.NBD()
    h.set_request_structured_replies(n != 1)                     # one with simple replies
    h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_ALIGN)    # send unaligned requests as is
    h.connect_uri(uri)
    handles.append(h)
print(json.dumps([h.can_multi_conn() for h in handles]))
for n, offset, length, seed in plan:
    handles[n].pwrite(random.Random(seed).randbytes(length), offset)
    handles[(n + 1) % 4].flush()
    print(hashlib.sha256(handles[(n + 2) % 4].pread(length, offset)).hexdigest())
def own(n):
    handles[n].pwrite(random.Random(100 + n).randbytes(3 * 1024 * 1024 + 333),
                      n * 5 * 1024 * 1024 + 1000 + n)
threads = [threading.Thread(target=own, args=(n,)) for n in range(4)]
for t in threads: t.start()
for t in threads: t.join()
handles[0].flush()
for h in handles:
    print(hashlib.sha256(h.pread(h.get_size(), 0)).hexdigest())
    h.shutdown()
"""


def plan(seed: int) -> list[list[int]]:
    """Writes of every shape: sub-sector, unaligned, exactly 1 MiB, several pieces."""
    rng = random.Random(seed)
    writes = [[0, 0, MIB, 1], [1, MIB + 512, MIB, 2], [2, 7 * MIB - 100, 2 * MIB + 300, 3],
              [3, 100, 7, 4]]
    for n in range(12):
        length = rng.choice([1, 511, 4096, 65536, MIB - 1, MIB, MIB + 1, 3 * MIB])
        writes.append([n % 4, rng.randrange(SIZE - length), length, 10 + n])
    return writes


def model_after(writes: list[list[int]], backing: bytes) -> tuple[bytearray, list[str]]:
    model = bytearray(backing)
    reads = []
    for _n, offset, length, seed in writes:
        model[offset:offset + length] = random.Random(seed).randbytes(length)
        reads.append(digest(model[offset:offset + length]))
    for n in range(4):
        data = random.Random(100 + n).randbytes(3 * MIB + 333)
        offset = n * 5 * MIB + 1000 + n
        model[offset:offset + len(data)] = data
    return model, reads


def run(tmp: Path, writes: list[list[int]], options: tuple[str, ...] = ()) -> tuple[Path, list[str]]:
    """The requests through `ubdsim serve` over tmp/disk.cow on ../back.img (made once)."""
    tmp.mkdir()
    backing, cow = tmp.parent / "back.img", tmp / "disk.cow"
    if not backing.exists():
        backing.write_bytes(random.Random(7).randbytes(SIZE))
    with serve(tmp / "s", [f"ubd0={cow},{backing}"], kernel="2.4", options=options) as served:
        uri = served.uri("ubd0")
        lines = libnbd(MULTI, uri, json.dumps(writes)).splitlines()
        copy = tmp / "copy.raw"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", uri, str(copy)],
                       check=True, capture_output=True, timeout=300)
    assert json.loads(lines[0]) == [True] * 4          # NBD_FLAG_CAN_MULTI_CONN on each
    model, reads = model_after(writes, backing.read_bytes())
    assert lines[1:1 + len(writes)] == reads           # a write seen, after a flush, elsewhere
    assert lines[1 + len(writes):] == [digest(model)] * 4
    assert copy.read_bytes() == model
    assert moo(cow, tmp / "merged.img") == bytes(model)
    return cow, lines


def test_connections_share_one_consistent_unit(tmp_path: Path) -> None:
    """Four libnbd connections to one export, writes on one, flush on another, reads on a
    third, then concurrent writes from all four: every connection sees every write."""
    run(tmp_path / "plain", plan(1))


def test_reused_write_buffer_gives_the_bytes_of_the_recorded_path(tmp_path: Path) -> None:
    """The same requests with --record (a fresh buffer per piece, every host write logged
    with its bytes) and without (one reused buffer per connection): the same COW file (on the
    same backing file, so even the headers agree), and `ubdsim replay` of the log rebuilds
    it: no logged write lost its bytes to a later one."""
    writes = plan(2)
    plain, _ = run(tmp_path / "plain", writes)
    log = tmp_path / "run.log"
    recorded, _ = run(tmp_path / "recorded", writes, ("--record", str(log)))
    assert recorded.read_bytes() == plain.read_bytes()
    into = tmp_path / "replayed"
    done = subprocess.run([UBDSIM, "replay", str(log), "--into", str(into)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (into / recorded.name).read_bytes() == recorded.read_bytes()


HOLD = """
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(bytes(2 * 1024 * 1024), 0)
print("connected", flush=True)
sys.stdin.read()            # until the test closes our stdin
try:
    h.pread(512, 0)
    print("still served")
except nbd.Error:
    print("disconnected")
"""


def test_stopping_the_server_ends_connections_it_is_serving(tmp_path: Path) -> None:
    """SIGTERM while two clients are connected (their threads waiting for a request): the
    server exits 0 and removes its socket (serving.serve() checks both), and the clients
    find their connections closed."""
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(4 * MIB))
    clients = []
    with serve(tmp_path / "s", [f"ubd0={image}"]) as served:
        for _ in range(2):
            client = subprocess.Popen([LIBNBD_PYTHON, "-c", "import nbd, sys\n" + HOLD,
                                       served.uri("ubd0")], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
            assert client.stdout.readline() == "connected\n"
            clients.append(client)
    for client in clients:
        out, _ = client.communicate("", timeout=60)
        assert out == "disconnected\n"
