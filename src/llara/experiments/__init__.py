"""Whole experiments built from the library: the demo and the ablation."""
