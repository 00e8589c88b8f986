"""Papayya: durable execution and cost control for AI agents."""

__version__ = "0.1.0"
