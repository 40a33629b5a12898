"""``python -m mailconduit`` runs the CLI."""

import sys

from mailconduit.cli import main

sys.exit(main())
