"""Route modules; importing one registers its routes on ``web.openapi.api``."""
