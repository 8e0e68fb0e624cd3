"""A small markdown → HTML renderer for the report (no dependency): the subset ``report.md`` uses.

Blocks: ATX headings (``#`` … ``######``), paragraphs, ``-`` / ``*`` / ``1.`` lists (one level), pipe tables
(header row + ``|---|`` separator), fenced code blocks, and ``<div…>`` / ``<script…>`` raw HTML lines passed
through. Inline: ``**bold**``, ``*italic*`` / ``_italic_`` (not inside words), `` `code` ``, ``[text](url)`` and
``![alt](src)`` (``src`` may be mapped, e.g. to a ``data:`` URI, by ``image``). Everything else is escaped.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

_CODE = re.compile(r"`([^`]+)`")
_IMG = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITAL = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])|(?<![\w])_(?!\s)(.+?)(?<!\s)_(?![\w])")
_HEAD = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_ITEM = re.compile(r"^\s*(?:[-*]|\d+[.)])\s+(.*)$")
_SEP = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def inline(text: str, image: Callable[[str], str] | None = None) -> str:
    """One line of markdown inline syntax as HTML (code spans first, so their content stays literal)."""
    out, pos = [], 0
    for m in _CODE.finditer(text):
        out.append(_spans(text[pos:m.start()], image))
        out.append(f"<code>{html.escape(m.group(1))}</code>")
        pos = m.end()
    out.append(_spans(text[pos:], image))
    return "".join(out)


def _spans(text: str, image: Callable[[str], str] | None) -> str:
    slots: list[str] = []

    def keep(s: str) -> str:
        slots.append(s)
        return f"\x00{len(slots) - 1}\x00"

    def img(m: re.Match) -> str:
        src = image(m.group(2)) if image is not None else m.group(2)
        return keep(f'<img alt="{html.escape(m.group(1))}" src="{html.escape(src)}"/>')

    text = _IMG.sub(img, text)
    text = _LINK.sub(lambda m: keep(f'<a href="{html.escape(m.group(2))}">') + m.group(1) + keep("</a>"), text)
    text = html.escape(text, quote=False)
    text = _BOLD.sub(r"<strong>\1</strong>", text)
    text = _ITAL.sub(lambda m: f"<em>{m.group(1) or m.group(2)}</em>", text)
    return re.sub(r"\x00(\d+)\x00", lambda m: slots[int(m.group(1))], text)


def _cells(line: str) -> list[str]:
    s = line.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|") and not s.endswith("\\|"):
        s = s[:-1]
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", s)]


def to_html(md: str, image: Callable[[str], str] | None = None) -> str:
    """The HTML body of a markdown document."""
    lines = md.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.lstrip().startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].lstrip().startswith("```"):
                j += 1
            out.append("<pre><code>" + html.escape("\n".join(lines[i + 1:j])) + "</code></pre>")
            i = j + 1
            continue
        if re.match(r"^\s*<(div|script|figure|table|details)\b", line):
            out.append(line)
            i += 1
            continue
        h = _HEAD.match(line)
        if h:
            n = len(h.group(1))
            out.append(f"<h{n}>{inline(h.group(2), image)}</h{n}>")
            i += 1
            continue
        if line.lstrip().startswith("|") and i + 1 < len(lines) and _SEP.match(lines[i + 1]):
            head = _cells(line)
            i += 2
            body = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                body.append(_cells(lines[i]))
                i += 1
            th = "".join(f"<th>{inline(c, image)}</th>" for c in head)
            trs = "".join("<tr>" + "".join(f"<td>{inline(c, image)}</td>" for c in r) + "</tr>" for r in body)
            out.append(f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>")
            continue
        if _ITEM.match(line):
            ordered = bool(re.match(r"^\s*\d", line))
            items: list[str] = []
            while i < len(lines) and lines[i].strip():
                m = _ITEM.match(lines[i])
                if m:
                    items.append(m.group(1))
                elif items:
                    items[-1] += " " + lines[i].strip()
                i += 1
            tag = "ol" if ordered else "ul"
            out.append(f"<{tag}>" + "".join(f"<li>{inline(t, image)}</li>" for t in items) + f"</{tag}>")
            continue
        para = []
        while (i < len(lines) and lines[i].strip() and not _HEAD.match(lines[i]) and not _ITEM.match(lines[i])
               and not lines[i].lstrip().startswith(("|", "```"))):
            para.append(lines[i].strip())
            i += 1
        if not para:  # a lone table-looking line without a separator
            para.append(lines[i].strip())
            i += 1
        out.append(f"<p>{inline(' '.join(para), image)}</p>")
    return "\n".join(out)
