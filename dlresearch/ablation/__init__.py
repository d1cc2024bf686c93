"""Paper-claim ablations: experiments, their runs, statistics and reports."""
