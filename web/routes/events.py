"""events routes (being built)."""
