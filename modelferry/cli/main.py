"""Entry point: a click group whose subcommands live in sibling modules.

Exit codes: 0 ok, 1 retryable, 2 usage or configuration, 3 permanent.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from modelferry import __version__
from modelferry.errors import EXIT_PERMANENT, EXIT_USAGE, ModelferryError
from modelferry.logs import scrub, setup_logging

log = logging.getLogger("modelferry")

# name -> "module:attribute"; imported lazily so `modelferry sync` never imports kubernetes or torch.
SUBCOMMANDS: dict[str, str] = {
    "sync": "modelferry.cli.sync:sync_command",
    "enigma": "modelferry.cli.enigma:enigma_command",
    "hf-download": "modelferry.cli.omeagent:hf_download_command",
    "replica": "modelferry.cli.omeagent:replica_command",
    "sample": "modelferry.cli.sample:sample_command",
    "sidecar": "modelferry.cli.sidecar:sidecar_group",
    "demo": "modelferry.cli.demo:demo_command",
    "serve": "modelferry.cli.serve:serve_command",
    "training-agent": "modelferry.cli.training_agent:training_agent_command",
    "inspect": "modelferry.cli.inspect:inspect_command",
    "agent": "modelferry.cli.agent:agent_command",
    "controller": "modelferry.cli.controller:controller_command",
    "noop": "modelferry.cli.controller:noop_command",
    "upload": "modelferry.cli.upload:upload_command",
}


def register(name: str, target: str) -> None:
    """Add a lazily imported subcommand (used by optional components)."""
    SUBCOMMANDS[name] = target


# The group's own options that OME users write after the subcommand (OME-Agent's `enigma --config x
# --debug`, the model agent's pod `args: [--log-level=debug, --log-format=json]`).
GLOBAL_OPTIONS = {"--log-level": True, "--log-format": True, "--debug": False}  # name -> takes a value


def hoist_global_options(args: list[str], own: set[str]) -> list[str]:
    """Move the group's options found after the subcommand (before ``--``) in front of it (pure).

    ``args[0]`` is the subcommand; options the subcommand defines itself (``own``) stay where they are.
    """
    front: list[str] = []
    rest: list[str] = [args[0]]
    i = 1
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_OPTIONS and name not in own:
            if GLOBAL_OPTIONS[name] and "=" not in arg and i + 1 < len(args):
                front.extend(args[i : i + 2])
                i += 2
                continue
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


def subcommand_index(args: list[str]) -> int | None:
    """Where the subcommand sits in the group's arguments (values of the group's options skipped)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return i
        i += 2 if GLOBAL_OPTIONS.get(arg) else 1
    return None


class LazyGroup(click.Group):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        first = subcommand_index(args)
        if first is not None and args[first] in SUBCOMMANDS:
            command = self.get_command(ctx, args[first])
            own = {o for p in (command.params if command else []) for o in (*p.opts, *p.secondary_opts)}
            args = args[:first] + hoist_global_options(args[first:], own)
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            missing = getattr(exc, "name", "") or str(exc)

            @click.command(
                cmd_name,
                context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
            )
            def unavailable() -> None:
                raise ModelferryError(
                    f"'{cmd_name}' needs a component that is not installed ({missing})",
                    hint="Install the matching extra, e.g. pip install 'modelferry[controller]'",
                )

            return unavailable
        command: click.Command = getattr(module, attr)
        return command


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="modelferry")
@click.option(
    "--log-level",
    default=None,
    envvar="MODELFERRY_LOG_LEVEL",
    type=click.Choice(["debug", "info", "warning", "warn", "error"], case_sensitive=False),
    help="Log verbosity (env MODELFERRY_LOG_LEVEL; warn as in OME).",
)
@click.option(
    "--log-format",
    default=None,
    envvar="MODELFERRY_LOG_FORMAT",
    type=click.Choice(["text", "json"]),
    help="Log line format (env MODELFERRY_LOG_FORMAT).",
)
@click.option("--debug", is_flag=True, help="Same as --log-level debug (OME-Agent compatible).")
@click.pass_context
def cli(ctx: click.Context, log_level: str | None, log_format: str | None, debug: bool) -> None:
    """modelferry moves large ML models and fine-tuning work through Kubernetes.

    Every copy is verified (sha256 or the store's checksum), resumable and written
    atomically, with a manifest written last.
    """
    level = "debug" if debug else (log_level or "info").lower()
    level = "warning" if level == "warn" else level
    setup_logging(level, log_format or "text")
    ctx.ensure_object(dict)
    ctx.obj["log_level"] = level
    ctx.obj["log_format"] = log_format or "text"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: maps every failure to an exit code and one clear line."""
    try:
        code = cli.main(args=argv, prog_name="modelferry", standalone_mode=False)
    except click.exceptions.Abort:
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE)
    except ModelferryError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        log.exception("unexpected error: %s", scrub(str(exc)))
        sys.exit(EXIT_PERMANENT)
    sys.exit(code if isinstance(code, int) else 0)
