"""docs/reference/cli.md: every command of the click tree, its arguments and options."""

from __future__ import annotations

import textwrap

import click

from tools.refdocs.tables import code, page, table


def _help_lines(text: str | None) -> list[str]:
    """A click docstring as Markdown: paragraphs as they are, ``\\b`` blocks as code."""
    out: list[str] = []
    for paragraph in (text or "").strip().split("\n\n"):
        lines = paragraph.splitlines()
        if lines and lines[0].strip() == "\b":
            out += ["```text", *textwrap.dedent("\n".join(lines[1:])).rstrip().splitlines(), "```", ""]
        else:
            out += [" ".join(line.strip() for line in lines), ""]
    return out


def _type_name(param: click.Parameter) -> str:
    kind = param.type
    if isinstance(kind, click.Choice):
        return " | ".join(str(choice) for choice in kind.choices)
    if isinstance(param, click.Option) and param.is_flag:
        return "flag"
    return kind.name


def _default(param: click.Option, ctx: click.Context) -> str:
    default = param.get_default(ctx, call=False)
    unset = type(default).__name__ == "Sentinel"  # click's UNSET
    if unset or callable(default) or default in (None, (), []) or (param.is_flag and default is False):
        return ""
    if isinstance(default, tuple | list):
        return ", ".join(str(item) for item in default)
    return str(default)


def _envvar(param: click.Option) -> str:
    names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
    return ", ".join(code(name) for name in names)


def _command(path: str, command: click.Command, ctx: click.Context) -> list[str]:
    if command.callback is not None and command.callback.__name__ == "unavailable":
        raise RuntimeError(f"'{path}' could not be imported: install every extra (pip install -e '.[dev]') first")
    usage = " ".join([path, *command.collect_usage_pieces(ctx)])
    lines = [f"## `{path}`", "", *_help_lines(command.help), "```text", f"Usage: {usage}", "```", ""]
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    if arguments:
        rows: list[tuple[str, ...]] = [
            (code(p.human_readable_name), _type_name(p), "yes" if p.required else "no") for p in arguments
        ]
        lines += table(["argument", "type", "required"], rows)
    options = [p for p in command.params if isinstance(p, click.Option) and not p.hidden]
    if options:
        rows = [
            (
                ", ".join(code(o) for o in [*p.opts, *p.secondary_opts]),
                _type_name(p),
                _default(p, ctx),
                _envvar(p),
                p.help or "",
            )
            for p in options
        ]
        lines += table(["option", "type", "default", "variable", "meaning"], rows)
    return lines


def _walk(path: str, command: click.Command, parent: click.Context | None) -> list[str]:
    ctx = click.Context(command, info_name=path.rsplit(" ", 1)[-1], parent=parent)
    lines = _command(path, command, ctx)
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                lines += _walk(f"{path} {name}", sub, ctx)
    return lines


def render() -> str:
    from modelferry.cli.main import cli

    intro = (
        "Every command of `modelferry`, walked from its click tree. Options that also read an environment "
        "variable name it under *variable*; most settings have a `MODELFERRY_*` variable as well, listed in "
        "[settings](settings.md). Exit codes: 0 done, 1 retryable, 2 usage or configuration, 3 permanent."
    )
    return page("Command-line reference", intro, _walk("modelferry", cli, None))
