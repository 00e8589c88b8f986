"""The composition root: the `papayya` command line, which starts and wires the API, scheduler, worker and projector. Nothing imports this package."""
