"""One script per classic ablation: python -m experiments.<name> --preset=standard --workdir=W."""
