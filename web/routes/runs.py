"""runs routes (being built)."""
