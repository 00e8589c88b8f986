"""The composition root: the `papayya` command line, which starts and wires the API, scheduler,
worker and projector (`server.app.init_app`). Nothing imports this package."""
