"""``python -m itertrain``: the command-line interface."""

from itertrain.cli import main

raise SystemExit(main())
