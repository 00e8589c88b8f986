"""Triggers that start runs without an API call: cron schedules and signed webhooks
(DESIGN §9). The maths (``cron``, ``zone``, ``policy``, ``signing``) is pure; ``scheduler``
is the thin shell that fires schedules against Postgres."""
