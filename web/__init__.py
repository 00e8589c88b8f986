"""The aiohttp control plane."""
