"""The report page writer: one description rendered as Markdown and as escaped HTML."""

from __future__ import annotations

from cpcaudio.report.html import Bullets, Code, Heading, Image, Page, Paragraph, Table, render_html, render_markdown


def test_page_renders_to_markdown_and_escaped_html():
    page = Page("Title <1>").add(
        Heading("Part"),
        Paragraph("plain `code` and **bold** <script>"),
        Bullets(["one", "two | three"]),
        Table(["name", "value"], [["a|b", "1.0%"]]),
        Image("figures/x.png", "a caption"),
        Code("cpcaudio demo\n"),
    )
    markdown = render_markdown(page)
    assert markdown.startswith("# Title <1>\n")
    assert "| a\\|b | 1.0% |" in markdown and "|---|---:|" in markdown
    assert "![a caption](figures/x.png)" in markdown and "```\ncpcaudio demo\n```" in markdown
    document = render_html(page)
    assert "<script>" not in document and "&lt;script&gt;" in document
    assert "<code>code</code>" in document and "<strong>bold</strong>" in document
    assert '<img src="figures/x.png"' in document and "<td class=\"r\">1.0%</td>" in document
