"""One script per classic ablation: python -m experiments.<name> --preset=quick|paper --workdir=W."""
