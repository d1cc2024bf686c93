"""`python -m dlresearch.ablation NAME|FILE [flags]`: the same as `dlresearch-experiment NAME|FILE`.

Runs a shipped experiment by name, or any experiment script by its path, from any directory.
"""

from dlresearch import cli

cli.experiment()
