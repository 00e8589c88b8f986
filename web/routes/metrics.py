"""metrics routes (being built)."""
