"""Entry point of the `jetraft` command.

Subcommands live in their own modules and are imported only when used, so `jetraft server` does
not pay for matplotlib or the Jepsen harness. Add a command by adding a line to COMMANDS.
"""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command or group
COMMANDS: dict[str, str] = {
    "server": "cli.server:server",
    "bench": "cli.bench:bench",
    "jepsen": "cli.jepsen_cmd:jepsen",
    "cluster": "cli.cluster:cluster",
    "stream": "cli.admin:stream",
    "servers": "cli.admin:servers",
    "meta": "cli.admin:meta",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None  # command not built yet
            raise
        return getattr(module, attr)


@click.group(cls=LazyGroup)
@click.version_option(package_name="jetraft")
def cli() -> None:
    """JetRaft: a NATS server with JetStream, replicated by Raft."""


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
