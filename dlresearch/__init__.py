"""dlresearch: controlled deep-learning ablations in JAX."""
