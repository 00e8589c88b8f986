"""The commands on runs: one module per command, used by the routes, the scheduler, webhooks,
the SDK's direct mode, the runtime API and the worker alike.

A command takes typed input, loads the run through the run-state repository
(``papayya.runstates.RunStates``, or any ``papayya.runs.Runs``), decides with the pure domain
(``papayya.domain``) and appends. Callers only parse, call a command and render; a rule about
runs lives here once, whoever asks.
"""
