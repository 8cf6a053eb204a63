"""One document, two renderings: self-contained HTML (figures inlined as base64) and a Markdown twin."""

from __future__ import annotations

import base64
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import polars as pl

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .85em; }
th, td { border: 1px solid #ccc; padding: .25em .55em; text-align: right; }
th { background: #f4f4f4; } td.text { text-align: left; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: .3em; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
.headline { background: #eef6ee; border-left: 4px solid #27ae60; padding: .6em 1em; font-weight: 600; }
.note { color: #8a6d3b; } .scroll { overflow-x: auto; }
details { margin: .5em 0; } summary { cursor: pointer; font-weight: 600; font-size: .9em; }
"""


@dataclass
class Document:
    title: str
    # (kind, payload) in order: "h2", "p", "note", "headline" (its sentences), "table", "figure".
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("p", text))

    def note(self, text: str) -> None:
        self.blocks.append(("note", text))

    def table(self, frame: pl.DataFrame, caption: str = "", digits: int = 3, folded: bool = True) -> None:
        """``folded``: under a <details> that shows the caption; False for a table that is the answer itself."""
        self.blocks.append(("table", (frame, caption, digits, folded)))

    def figure(self, path: Path, caption: str) -> None:
        self.blocks.append(("figure", (path, caption)))

    def figures(self) -> list[Path]:
        return [payload[0] for kind, payload in self.blocks if kind == "figure"]

    def tables(self) -> list[tuple[str, pl.DataFrame]]:
        """Every table with its caption, in document order."""
        return [(payload[1], payload[0]) for kind, payload in self.blocks if kind == "table"]

    def html(self) -> str:
        blocks = [_html_payload(kind, payload) for kind, payload in self.blocks]
        return _TEMPLATE.render(title=self.title, style=STYLE, blocks=blocks)

    def markdown(self, base: Path) -> str:
        """Markdown with figures linked relative to ``base`` (the folder the .md file is written to)."""
        parts = [f"# {self.title}", ""]
        for kind, payload in self.blocks:
            parts += [_markdown_block(kind, payload, base), ""]
        return "\n".join(parts)


def cell(value: object, digits: int) -> str:
    """One table cell as text: floats rounded, missing values as "-"."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{digits}f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


# jinja2 escapes every value (autoescape); the figures are inlined so the file stands alone.
_TEMPLATE = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True).from_string(
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ title }}</title><style>{{ style | safe }}</style></head><body>
<h1>{{ title }}</h1>
{% for kind, item in blocks %}
{% if kind == "h2" %}<h2>{{ item }}</h2>
{% elif kind == "p" %}<p>{{ item }}</p>
{% elif kind == "note" %}<p class="note">{{ item }}</p>
{% elif kind == "headline" %}<p class="headline">{% for sentence in item %}{{ sentence }}{% if not loop.last %}<br>
{% endif %}{% endfor %}</p>
{% elif kind == "table" %}
{# Tables are folded under their caption: the answer and its figure come first, the numbers on demand.
   Wide tables scroll inside their box instead of widening the page. #}
{% if item.folded %}<details><summary>{{ item.summary }}</summary>{% endif %}
<div class="scroll"><table>{% if not item.folded %}<caption>{{ item.summary }}</caption>{% endif %}
<thead><tr>{% for name in item.columns %}<th>{{ name }}</th>{% endfor %}</tr></thead><tbody>
{% for row in item.rows %}<tr>{% for css, text in row %}<td class="{{ css }}">{{ text }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table></div>{% if item.folded %}</details>{% endif %}
{% else %}<figure><img alt="{{ item.caption }}" src="data:image/png;base64,{{ item.png }}">
<figcaption>{{ item.caption }}</figcaption></figure>
{% endif %}
{% endfor %}
</body></html>
"""
)


def _html_payload(kind: str, payload: object) -> tuple[str, object]:
    """What the template needs of a block: text as is, tables as cell texts, figures as base64."""
    if kind == "table":
        frame, caption, digits, folded = payload
        rows = [[("text" if isinstance(v, str) else "", cell(v, digits)) for v in row] for row in frame.iter_rows()]
        summary = _summary(caption, frame)
        return kind, {"summary": summary, "folded": folded, "columns": frame.columns, "rows": rows}
    if kind == "figure":
        path, caption = payload
        return kind, {"caption": caption, "png": base64.b64encode(Path(path).read_bytes()).decode("ascii")}
    if kind == "headline":
        return kind, list(payload)
    return kind, str(payload)


def _markdown_block(kind: str, payload: object, base: Path) -> str:
    if kind == "h2":
        return f"## {payload}"
    if kind in ("p", "note"):
        return str(payload) if kind == "p" else f"> {payload}"
    if kind == "headline":
        # One finding per sentence, each on its own line.
        return "\n\n".join(f"**{sentence}**" for sentence in payload)
    if kind == "table":
        frame, caption, digits, folded = payload
        return _markdown_table(frame, caption, digits, folded)
    path, caption = payload
    relative = Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()
    return f"![{caption}]({relative})\n\n*{caption}*"


def _markdown_table(frame: pl.DataFrame, caption: str, digits: int, folded: bool) -> str:
    def escape(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    # Folded as in the HTML; GitHub and most Markdown viewers render <details>, the blank lines let the
    # table inside stay Markdown.
    summary = escape(_summary(caption, frame))
    lines = [f"<details><summary>{summary}</summary>", ""] if folded else [f"*{summary}*", ""]
    lines.append("| " + " | ".join(escape(c) for c in frame.columns) + " |")
    lines.append("|" + "|".join("---" for _ in frame.columns) + "|")
    for row in frame.iter_rows():
        lines.append("| " + " | ".join(escape(cell(v, digits)) for v in row) + " |")
    return "\n".join([*lines, "", "</details>"] if folded else lines)


def _summary(caption: str, frame: pl.DataFrame) -> str:
    """What a folded table shows closed: its caption and size."""
    size = f"{frame.height} row{'' if frame.height == 1 else 's'}"
    return f"{caption} ({size})" if caption else f"Table ({size})"
