"""MkDocs hook: the command line reference page, rendered from the typer app at build time.

``docs/reference/cli.md`` holds the marker ``<!-- cli-reference -->``; it is replaced by the
``--help`` text of ``anomaly`` and of each of its commands, exactly as the command line prints
it (at a fixed width of 100 columns), so the page cannot drift from the code.
"""

from __future__ import annotations

MARKER = "<!-- cli-reference -->"
WIDTH = 100


def _help_texts() -> list[tuple[str, str]]:
    """``(command line, help text)`` for ``anomaly`` and each of its commands, in menu order."""
    import typer

    from coreset_meg.anomaly.cli import app

    try:  # recent typer ships its own copy of click
        from typer._click import core as click_core
    except ImportError:  # pragma: no cover - typer releases built on the click package
        from click import core as click_core

    group = typer.main.get_command(app)
    root = click_core.Context(
        group, info_name="anomaly", terminal_width=WIDTH, max_content_width=WIDTH
    )
    texts = [("anomaly", group.get_help(root))]
    for name in group.list_commands(root):
        command = group.get_command(root, name)
        if command is None or command.hidden:
            continue
        ctx = click_core.Context(
            command, info_name=name, parent=root, terminal_width=WIDTH, max_content_width=WIDTH
        )
        texts.append((f"anomaly {name}", command.get_help(ctx)))
    return texts


def render() -> str:
    """The reference as Markdown: one section per command, its help in a code block."""
    parts = []
    for line, text in _help_texts():
        parts.append(f"## `{line}`\n\n```text\n{text.rstrip()}\n```\n")
    return "\n".join(parts)


def on_page_markdown(markdown, page, config, files, **kwargs):
    if page.file.src_uri != "reference/cli.md":
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"{page.file.src_uri} lost its marker {MARKER}")
    return markdown.replace(MARKER, render())
