"""One module per ``bnbver`` sub-command: ``configure(parser)`` and ``run(args) -> int``."""
