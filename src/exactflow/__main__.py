"""``python -m exactflow``: the command line."""

from .cli.main import entry

entry()
