"""`make demo`'s lesson page, opened in headless Chromium with the network shut out.

The demo runs once, up to act 7 (`--until 7`: its own small files, no qemu act), into a
private directory. The page must be self-contained (every picture a data: URI, no address
outside the page), render to a screenshot that is not blank and shows the pictures' colours,
and load every picture (the page's own script counts them into <body data-pictures-loaded>,
read back with --dump-dom)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from tests.show.guest import have
from ubdsim.show.figure import SOURCE_COLOURS

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo.py"
UNTIL = 7
PAGE_WIDTH = 1280


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.addresses: list[str] = []
        self.headings: list[str] = []
        self.body: dict[str, str] = {}
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for name in ("src", "href", "srcset", "data", "poster"):
            if name in attrs:
                self.addresses.append(attrs[name])
        if tag == "body":
            self.body = attrs
        if tag == "h2":
            self._in_h2 = True
            self.headings.append("")

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        if self._in_h2:
            self.headings[-1] += data


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium, a fresh profile, every host name unresolvable (no network)."""
    return subprocess.run(
        [have("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--no-proxy-server", *args],
        capture_output=True, text=True, timeout=180, cwd=tmp)


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "out"
    done = subprocess.run([sys.executable, str(DEMO), "--out", str(out), "--until", str(UNTIL)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TMPDIR": str(out.parent)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert done.stderr == ""
    assert done.stdout.rstrip().splitlines()[-1].startswith(
        f"demo: acts 1-{UNTIL} (--until {UNTIL}): every step checked out")
    return out


def test_page_is_self_contained_and_walks_through_the_acts(demo_out):
    page = _Page()
    page.feed((demo_out / "index.html").read_text(encoding="utf-8"))
    transcript = json.loads((demo_out / "lesson.json").read_text(encoding="utf-8"))
    pictures = [item["picture"] for act in transcript["acts"] for item in act["items"]
                if item["kind"] == "picture"]
    assert pictures == ["guest-written.png", "resize.png"]
    assert all((demo_out / name).stat().st_size > 0 for name in pictures)
    assert len(page.images) == len(pictures)
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert all(a.startswith(("data:", "#")) for a in page.addresses), \
        [a[:60] for a in page.addresses if not a.startswith(("data:", "#"))]
    assert [h.split(".")[0] for h in page.headings] == [str(n) for n in range(1, UNTIL + 1)]
    text = (demo_out / "index.html").read_text(encoding="utf-8")
    for command in ("ubdsim run --kernel 2.4 ubd0=guest.cow,base.img --",
                    "ubdsim show --width 72 guest.cow",
                    "ubdsim show --compare --width 80 before-resize.cow guest.cow",
                    "Resizing cow file: "):
        assert command in text
    assert "ubdsim vm" not in text.split("<nav>")[1].split("</nav>")[0]   # act 8 was not told
    assert page.body["data-pictures"] == str(len(pictures))


def test_page_renders_in_headless_chromium_with_every_picture_loaded(demo_out, tmp_path):
    url = (demo_out / "index.html").as_uri()
    dom = _chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = _Page()
    page.feed(dom.stdout)
    assert page.body.get("data-pictures") == "2"
    assert page.body.get("data-pictures-loaded") == "2", page.body
    assert "2 of 2 pictures loaded" in dom.stdout

    height = 9000
    shot = _chromium(tmp_path, f"--screenshot={tmp_path / 'page.png'}",
                     f"--window-size={PAGE_WIDTH},{height}", url)
    assert shot.returncode == 0, shot.stderr[-2000:]
    image = imread(tmp_path / "page.png")[:, :, :3]
    assert image.shape[:2] == (height, PAGE_WIDTH)
    grey = image.mean(axis=2)
    assert grey.std() > 0.1, "the screenshot is blank"
    used = np.nonzero((grey < 0.95).any(axis=1))[0]
    assert used.max() - used.min() > 4000, "the page is shorter than its acts"
    # The pictures drew: their colours are on the screen, in the amounts a picture has
    # (the page's own style uses neither).
    for source in ("backing", "cow", "tail"):
        rgb = np.array(to_rgb(SOURCE_COLOURS[source]))
        pixels = int(np.all(np.abs(image - rgb) < 3 / 255, axis=2).sum())
        assert pixels > 500, f"{source}: {pixels} pixels"
