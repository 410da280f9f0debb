#!/usr/bin/env python3
"""The lesson page of `make demo`: one self-contained HTML file a teacher can project.

scripts/demo.py records what it tells (acts, their explanations, every command with the
output it showed, its notes, the pictures `ubdsim show` drew) in a `Transcript`; this
module writes it as `index.html`: one section per act, commands and their output as a
terminal shows them, pictures embedded as data: URIs (the PNG files stay beside the page
too), inline CSS, no fonts, scripts or images from anywhere else: it opens the same with the
network unplugged. A small inline script counts the pictures that loaded and writes the
count into the page (`<body data-pictures-loaded=N data-pictures=M>` and the footer).

The transcript is saved beside the page as `lesson.json`, so
`python3 scripts/lesson_page.py demo-out` writes the page again without rerunning the demo.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field

TITLE = "A copy-on-write disk, step by step"
PAGE = "index.html"
TRANSCRIPT = "lesson.json"


@dataclass
class Item:
    """One thing an act shows: a command and its output, a note, or a picture."""

    kind: str                        # "command", "note", "picture"
    text: str                        # the command line, the note, the picture's caption
    output: list[str] = field(default_factory=list)
    picture: str | None = None       # file name in the output directory


@dataclass
class Act:
    title: str
    explanation: list[str]
    items: list[Item] = field(default_factory=list)


@dataclass
class Transcript:
    """What the demo told, in order; `act()` starts a section, the rest add to the last one."""

    acts: list[Act] = field(default_factory=list)
    summary: str = ""

    def act(self, title: str, explanation: list[str]) -> None:
        self.acts.append(Act(title, list(explanation)))

    def _add(self, item: Item) -> None:
        if not self.acts:
            self.act("", [])
        self.acts[-1].items.append(item)

    def command(self, text: str, output: list[str]) -> None:
        self._add(Item("command", text, list(output)))

    def note(self, text: str) -> None:
        items = self.acts[-1].items if self.acts else []
        if items and items[-1].kind == "note":       # consecutive notes make one paragraph
            items[-1].text += "\n" + text
        else:
            self._add(Item("note", text))

    def picture(self, name: str, caption: str) -> None:
        self._add(Item("picture", caption, picture=name))

    @property
    def pictures(self) -> list[str]:
        return [item.picture for act in self.acts for item in act.items if item.kind == "picture"]

    def save(self, directory: str) -> str:
        path = os.path.join(directory, TRANSCRIPT)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(asdict(self), f, indent=1, ensure_ascii=False)
        return path

    @classmethod
    def load(cls, directory: str) -> "Transcript":
        with open(os.path.join(directory, TRANSCRIPT), encoding="utf-8") as f:
            data = json.load(f)
        acts = [Act(a["title"], a["explanation"], [Item(**i) for i in a["items"]])
                for a in data["acts"]]
        return cls(acts, data.get("summary", ""))


STYLE = """
:root { --ink: #1d1d1d; --muted: #555; --term: #14161a; --term-ink: #e8e8e8; --accent: #2B6CB0; }
* { box-sizing: border-box; }
body { margin: 0; font: 20px/1.5 "DejaVu Sans", "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); background: #fff; }
main { max-width: 1280px; margin: 0 auto; padding: 28px 40px 60px; }
h1 { font-size: 40px; margin: 0 0 8px; }
h1 small { display: block; font-size: 22px; font-weight: normal; color: var(--muted); }
h2 { font-size: 30px; margin: 48px 0 10px; padding-top: 14px; border-top: 3px solid var(--accent); }
nav ol { columns: 2; font-size: 18px; }
nav a, h2 a { color: inherit; text-decoration: none; }
p.explain { margin: 6px 0 14px; max-width: 62em; }
pre { font: 15.5px/1.35 "DejaVu Sans Mono", "Liberation Mono", monospace; margin: 0;
      white-space: pre-wrap; overflow-wrap: anywhere; }
.session { background: var(--term); color: var(--term-ink); border-radius: 8px;
           padding: 12px 16px; margin: 12px 0; }
.session pre.cmd { color: #9fe870; font-weight: bold; }
.session pre.cmd::before { content: "$ "; color: #8a8a8a; }
.session pre.out { color: var(--term-ink); margin: 4px 0 10px 0; }
p.note { border-left: 6px solid var(--accent); background: #EEF4FB; padding: 8px 14px;
         margin: 12px 0; white-space: pre-line; }
figure { margin: 18px 0 26px; }
figure img { display: block; width: 100%; height: auto; border: 1px solid #ccc; border-radius: 4px; }
figcaption { font-size: 17px; color: var(--muted); margin-top: 6px; }
code { font-family: "DejaVu Sans Mono", monospace; font-size: 0.9em; background: #f1f1f1;
       padding: 0 4px; border-radius: 3px; }
h2 code { background: none; padding: 0; }
footer { margin-top: 50px; font-size: 15px; color: var(--muted); }
"""

COUNT_SCRIPT = """
window.addEventListener("load", function () {
  var pictures = Array.prototype.slice.call(document.querySelectorAll("figure img"));
  var loaded = pictures.filter(function (img) { return img.complete && img.naturalWidth > 0; });
  document.body.setAttribute("data-pictures-loaded", String(loaded.length));
  document.body.setAttribute("data-pictures", String(pictures.length));
  var where = document.getElementById("loaded");
  if (where) { where.textContent = loaded.length + " of " + pictures.length + " pictures loaded"; }
});
"""


def _text(text: str) -> str:
    """Escaped, with `backquoted` spans as <code> (the demo writes commands that way)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _data_uri(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


def _anchor(i: int) -> str:
    return f"act-{i + 1}"


def _session(commands: list[Item]) -> str:
    rows = []
    for item in commands:
        rows.append(f'<pre class="cmd">{html.escape(item.text)}</pre>')
        if item.output:
            rows.append(f'<pre class="out">{html.escape(chr(10).join(item.output))}</pre>')
    return '<div class="session">' + "".join(rows) + "</div>"


def _act(i: int, act: Act, directory: str) -> str:
    parts = [f'<section id="{_anchor(i)}"><h2><a href="#{_anchor(i)}">{_text(act.title)}</a></h2>']
    if act.explanation:
        parts.append(f'<p class="explain">{_text(" ".join(act.explanation))}</p>')
    commands: list[Item] = []
    for item in act.items + [Item("end", "")]:
        if item.kind == "command":
            commands.append(item)
            continue
        if commands:
            parts.append(_session(commands))
            commands = []
        if item.kind == "note":
            parts.append(f'<p class="note">{_text(item.text)}</p>')
        elif item.kind == "picture":
            source = _data_uri(os.path.join(directory, item.picture))
            parts.append(f'<figure><img src="{source}" alt="{html.escape(item.text, quote=True)}">'
                         f'<figcaption>{_text(item.text)} '
                         f'(<code>{html.escape(item.picture)}</code>)</figcaption></figure>')
    parts.append("</section>")
    return "\n".join(parts)


def render(transcript: Transcript, directory: str) -> str:
    """The page as one string; pictures are read from `directory` and embedded."""
    nav = "".join(f'<li><a href="#{_anchor(i)}">{_text(act.title.split(". ", 1)[-1])}</a></li>'
                  for i, act in enumerate(transcript.acts))
    acts = "\n".join(_act(i, act, directory) for i, act in enumerate(transcript.acts))
    summary = f"<p>{html.escape(transcript.summary)}</p>" if transcript.summary else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(TITLE)} (ubdsim)</title>
<style>{STYLE}</style>
</head>
<body data-pictures-loaded="0" data-pictures="{len(transcript.pictures)}">
<main>
<h1>{html.escape(TITLE)}<small>User-Mode Linux's ubd driver and its COW files, as <code>make demo</code> showed them with ubdsim</small></h1>
{summary}
<nav><ol>{nav}</ol></nav>
{acts}
<footer>Written by <code>make demo</code> (scripts/demo.py). Every command above ran as shown; its output is
what it printed. <span id="loaded"></span></footer>
</main>
<script>{COUNT_SCRIPT}</script>
</body></html>
"""


def write_page(transcript: Transcript, directory: str) -> str:
    """Write `index.html` (and `lesson.json`) into `directory`; returns the page's path."""
    page = render(transcript, directory)
    transcript.save(directory)
    path = os.path.join(directory, PAGE)
    temp = path + ".tmp"
    with open(temp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(temp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="the demo's output directory (with lesson.json)")
    directory = parser.parse_args(argv).directory
    try:
        path = write_page(Transcript.load(directory), directory)
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"lesson_page: error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
