"""`python -m minivae ...` is the `minivae` command (for machines where its script is not on PATH)."""

import sys

from minivae.cli import main

sys.exit(main())
