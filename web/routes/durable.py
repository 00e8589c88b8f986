"""durable routes (being built)."""
