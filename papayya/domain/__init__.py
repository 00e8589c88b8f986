"""The pure domain core: events, the run fold and its rules, record/replay matching.

Nothing here does I/O; commands, projections and the runtime are shells around it.
"""
