"""tinylab: a tiny GPT training workbook (see README.md). Importing the package does nothing, except for a command."""
import sys

if sys.argv[:1] == ["-m"]:  # `python -m tinylab.X`: Python sets argv[0] to "-m" while it imports X's package, so
    from .errors import exit_on_interrupt  # this runs before X's own imports (torch: seconds), never in a notebook

    exit_on_interrupt()
