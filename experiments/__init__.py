"""One script per classic ablation: python -m experiments.<name> --preset=quick|standard|paper --workdir=W."""
