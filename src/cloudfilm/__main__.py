"""``python -m cloudfilm``: the same as the ``cloudfilm`` command."""

from cloudfilm.cli.main import cli

cli()
