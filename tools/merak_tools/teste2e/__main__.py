"""`python -m merak_tools.teste2e`: the `teste2e` command."""

import sys

from merak_tools.teste2e.cli import main

sys.exit(main())
