"""usage routes (being built)."""
