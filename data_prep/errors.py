"""The exception bad input to data prep raises: the project's one usage error, which the CLI turns
into one line and exit status 2 (option values are parsed and checked by data_prep/options.py)."""

from backpack_dist.cli import UsageError

PrepError = UsageError  # bad input or settings; the message names the problem and the fix
