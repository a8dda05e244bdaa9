"""A report page written twice from one description (Markdown and HTML).

A :class:`Page` is a title and a list of blocks (headings, paragraphs, bullet lists, tables, images);
:func:`render_markdown` and :func:`render_html` turn it into text, :func:`write_page` writes both files
atomically. Images are PNG files referenced by a path relative to the page, so the folder can be moved or
zipped as a whole and ``report.html`` opens in any browser without a server. Inline text supports
```code``` spans and ``**bold**`` (escaped for HTML); nothing else is interpreted.

:func:`save_figure` writes a matplotlib figure as a PNG the page can show (matplotlib's Agg canvas, no
display needed). Files are written with the usual permissions, so the folder can be served or shared.
"""

from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from cpcaudio.files import atomic_write_bytes

PathLike = Union[str, Path]


@dataclass
class Heading:
    """A section heading; ``level`` 2 is a section, 3 a subsection."""

    text: str
    level: int = 2


@dataclass
class Paragraph:
    """A paragraph of inline text."""

    text: str


@dataclass
class Bullets:
    """A bullet list, one inline text per item."""

    items: list[str]


@dataclass
class Table:
    """A table; ``align`` holds ``"l"`` or ``"r"`` per column (default: first left, the others right)."""

    header: list[str]
    rows: list[list[str]]
    align: list[str] = field(default_factory=list)

    def alignments(self) -> list[str]:
        if self.align:
            return list(self.align)
        return ["l"] + ["r"] * (len(self.header) - 1)


@dataclass
class Image:
    """A PNG image, ``path`` relative to the page's folder, with a caption under it."""

    path: str
    caption: str
    width: int = 720  # display width in the HTML page, in CSS pixels


@dataclass
class Code:
    """A preformatted block (commands, file listings)."""

    text: str
    language: str = ""


Block = Union[Heading, Paragraph, Bullets, Table, Image, Code]


@dataclass
class Page:
    """A titled list of blocks."""

    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> "Page":
        """Append blocks; returns ``self`` for chaining."""
        self.blocks.extend(blocks)
        return self


# ---- Markdown ----------------------------------------------------------------------------------------


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(page: Page) -> str:
    """The page as GitHub-flavoured Markdown."""
    lines = [f"# {page.title}", ""]
    for block in page.blocks:
        if isinstance(block, Heading):
            lines += [f"{'#' * max(2, min(6, block.level))} {block.text}", ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Bullets):
            lines += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            rule = ["---:" if a == "r" else "---" for a in block.alignments()]
            lines.append("| " + " | ".join(_markdown_cell(h) for h in block.header) + " |")
            lines.append("|" + "|".join(rule) + "|")
            lines += ["| " + " | ".join(_markdown_cell(c) for c in row) + " |" for row in block.rows]
            lines.append("")
        elif isinstance(block, Image):
            lines += [f"![{block.caption}]({block.path})", "", f"*{block.caption}*", ""]
        elif isinstance(block, Code):
            lines += [f"```{block.language}", block.text.rstrip("\n"), "```", ""]
        else:  # pragma: no cover - the Block union is closed
            raise TypeError(f"unknown block {block!r}")
    return "\n".join(lines).rstrip("\n") + "\n"


# ---- HTML --------------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 980px; margin: 2em auto;
       padding: 0 1em; color: #1b1b1b; line-height: 1.45; }
h1 { font-size: 1.7em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .93em; }
th, td { border: 1px solid #ccc; padding: .3em .7em; } th { background: #f3f3f3; }
td.r, th.r { text-align: right; } td.l, th.l { text-align: left; }
code, pre { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .9em; background: #f6f6f6; }
pre { padding: .7em; overflow-x: auto; } figure { margin: 1em 0; } img { max-width: 100%; height: auto; }
figcaption { font-size: .9em; color: #444; }
""".strip()

_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*")


def _inline_html(text: str) -> str:
    """Escape ``text`` and turn ```code``` and ``**bold**`` into HTML."""
    out, position = [], 0
    for match in _INLINE.finditer(text):
        out.append(html.escape(text[position : match.start()]))
        if match.group(1) is not None:
            out.append(f"<code>{html.escape(match.group(1))}</code>")
        else:
            out.append(f"<strong>{html.escape(match.group(2))}</strong>")
        position = match.end()
    out.append(html.escape(text[position:]))
    return "".join(out)


def render_html(page: Page) -> str:
    """The page as one self-contained HTML document (inline CSS; images by relative path)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(page.title)}</title>",
        f"<style>\n{_STYLE}\n</style></head><body>",
        f"<h1>{_inline_html(page.title)}</h1>",
    ]
    for block in page.blocks:
        if isinstance(block, Heading):
            level = max(2, min(6, block.level))
            parts.append(f"<h{level}>{_inline_html(block.text)}</h{level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{_inline_html(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{_inline_html(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            align = block.alignments()
            head = "".join(f'<th class="{a}">{_inline_html(h)}</th>' for h, a in zip(block.header, align))
            body = "".join(
                "<tr>" + "".join(f'<td class="{a}">{_inline_html(c)}</td>' for c, a in zip(row, align)) + "</tr>"
                for row in block.rows
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(block, Image):
            source = html.escape(block.path, quote=True)
            parts.append(
                f'<figure><a href="{source}"><img src="{source}" width="{block.width}" '
                f'alt="{html.escape(block.caption, quote=True)}"></a>'
                f"<figcaption>{_inline_html(block.caption)}</figcaption></figure>"
            )
        elif isinstance(block, Code):
            parts.append(f"<pre><code>{html.escape(block.text.rstrip())}</code></pre>")
        else:  # pragma: no cover
            raise TypeError(f"unknown block {block!r}")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def image_paths(page: Page) -> list[str]:
    """The relative paths of every image the page shows."""
    return [block.path for block in page.blocks if isinstance(block, Image)]


def write_page(page: Page, out_dir: PathLike, stem: str = "report") -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.html`` into ``out_dir`` (atomically).

    Args:
        page: what to write.
        out_dir: folder of the page; image paths are relative to it.
        stem: file name without extension.

    Returns:
        (path of the Markdown file, path of the HTML file).
    """
    out_dir = Path(out_dir)
    markdown_path, html_path = out_dir / f"{stem}.md", out_dir / f"{stem}.html"
    markdown, document = render_markdown(page), render_html(page)
    _write(markdown_path, lambda file: file.write(markdown.encode("utf-8")))
    _write(html_path, lambda file: file.write(document.encode("utf-8")))
    return markdown_path, html_path


def _write(path: Path, write: Any) -> None:
    """Write atomically, then give the file the usual permissions (``0o666`` less the umask) instead of
    the temporary file's ``0o600``, so that the report can be served or shared like any other file."""
    atomic_write_bytes(path, write)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


# ---- figures -------------------------------------------------------------------------------------------
# Drawn on matplotlib's Agg canvas directly (no global backend switch, no display needed).


def save_figure(figure: Any, path: PathLike, dpi: int = 110) -> Path:
    """Write a matplotlib ``Figure`` as PNG, atomically; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    FigureCanvasAgg(figure)
    _write(path, lambda file: figure.savefig(file, format="png", dpi=dpi))
    return path
