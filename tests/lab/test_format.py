"""The recorder on the device model itself (no guest): what it costs when off, what each
record holds, and how a reader treats a log cut short."""
from __future__ import annotations

import argparse
import json
import os

from ubdsim.cmdline.spec import UnitSpec
from ubdsim.device.events import EventBus
from ubdsim.device.open import open_unit
from ubdsim.lab.frontend import add_record_options, attach
from ubdsim.lab.logformat import read_log
from ubdsim.lab.replay import replay
from ubdsim.profiles import get_profile

from .helpers import sparse_file, ubdsim

P61 = get_profile("6.1")


def options(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_record_options(parser)
    return parser.parse_args(list(argv))


def test_without_record_or_trace_nothing_listens_and_io_events_stay_off(tmp_path):
    sparse_file(tmp_path / "b.img", 1 << 20)
    bus = EventBus(lambda event: None, kinds={"message"})
    session = attach(bus, options(), [UnitSpec(0, str(tmp_path / "c.cow"), str(tmp_path / "b.img"))],
                     print)
    assert not session.active and not bus.io_active and "UBDSIM_MARK" not in os.environ
    session.close()


def test_each_record_says_what_the_driver_and_the_host_did(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sparse_file(tmp_path / "b.img", 1 << 20)
    spec = UnitSpec(0, "c.cow", "b.img")
    bus = EventBus()
    lines: list[str] = []
    session = attach(bus, options("--record", "L", "--trace"), [spec], lines.append,
                     kernel="6.1")
    assert bus.io_active and os.environ["UBDSIM_MARK"] == session.mark_path
    with open_unit(spec, P61, bus) as unit:
        unit.write(0, b"\x11" * 8192)            # two segments, each data then its words
        unit.write(512, b"\x22" * 512)           # bit set already: data only
        session.recorder.mark("middle")
        unit.read(0, 1024)
        unit.discard(65536, 512)                 # a clear bit: punch, then its write-back
        unit.flush()
    session.close()
    assert "UBDSIM_MARK" not in os.environ
    with read_log(str(tmp_path / "L")) as log:
        kinds = [r["k"] for r in log.records]
        # do_io() per segment while the lab listens: data, then update_bitmap()'s words
        assert kinds == ["msg", "content", "open",
                         "req", "hw", "seg", "hw", "bitmap", "hw", "seg", "hw", "bitmap",
                         "req", "hw", "seg",
                         "mark",
                         "req", "read",
                         "req", "hf", "hw", "bitmap",
                         "flush", "close", "end"]
        data, bits = log.records[4], log.records[6]
        assert (data["o"], data["why"], bytes(log.payload(data))) == (12288, "data", b"\x11" * 4096)
        assert (bits["o"], bits["why"], bits["n"]) == (8192, "bitmap", 16)
        assert bytes(log.payload(bits))[:2] == b"\xff\x00"     # cowify_bitmap()'s snapshot
        assert bytes(log.payload(log.records[10]))[:2] == b"\xff\xff"
        assert log.records[15] == {"k": "mark", "name": "middle", "after": 6}
        punch = log.records[19]
        assert (punch["op"], punch["o"], punch["len"]) == ("punch", 12288 + 65536, 512)
        assert log.records[20]["o"] == 8192 + 16                          # words 2-3
    assert lines[-1] == "end: 8 host writes"
    assert "ubda write 0+16 sectors -> #2 c.cow pwrite 12288+4096 (data); #3 pwrite 8192+16 " \
           "(bitmap words 0-1); #4 pwrite 16384+4096 (data); #5 pwrite 8192+16 " \
           "(bitmap words 0-1) [2 segments]" in lines
    assert "ubda read 0+2 sectors <- c.cow 12288+1024" in lines


def test_a_log_cut_short_is_read_up_to_its_last_whole_record(tmp_path):
    sparse_file(tmp_path / "b.img", 1 << 20)
    spec = UnitSpec(0, str(tmp_path / "c.cow"), str(tmp_path / "b.img"))
    bus = EventBus()
    session = attach(bus, options("--record", str(tmp_path / "L")), [spec], print, kernel="6.1")
    with open_unit(spec, P61, bus) as unit:
        for i in range(4):
            unit.write(i * 4096, bytes([i + 1]) * 4096)
    session.close()
    whole = (tmp_path / "L").read_bytes()
    last_data = whole.rindex(b'"why":"data"')
    (tmp_path / "cut").write_bytes(whole[:last_data + 200])          # inside the payload
    with read_log(str(tmp_path / "cut")) as log:
        assert not log.complete and "cut off" in log.problem
        assert len(log.host_writes()) == 7                   # create, 3 x (data, bitmap)
        result = replay(log, "last", str(tmp_path / "out"))
        assert result.upto == 7 and result.matches_live is None
    shown = ubdsim(tmp_path, "log", "show", "--summary", "cut")
    assert shown.returncode == 0 and "INCOMPLETE (the bytes of the record at byte" in shown.stdout
    out = json.loads(ubdsim(tmp_path, "log", "show", "--json", "L").stdout)
    assert out["summary"]["host_writes"] == 9


def test_not_a_log(tmp_path):
    for name, content in (("empty", b""), ("text", b"hello\n"),
                          ("future", b'{"magic":"ubdsim-lab-log","version":9}\n')):
        (tmp_path / name).write_bytes(content)
        done = ubdsim(tmp_path, "log", "show", name)
        assert done.returncode == 1 and done.stdout == ""
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("ubdsim log: error: ")
