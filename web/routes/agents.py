"""agents routes (being built)."""
