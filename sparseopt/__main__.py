"""``python -m sparseopt``: the command line (see :mod:`sparseopt.cli`)."""

from .cli import main

raise SystemExit(main())
