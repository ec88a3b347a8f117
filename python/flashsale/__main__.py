"""``python -m flashsale`` runs the command line."""

from flashsale.cli import main

raise SystemExit(main())
