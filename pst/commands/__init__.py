"""Subcommands of the ``pst`` command line; each module has register(subparsers)."""
