"""The metering core shared by the HTTP gateway and the local SDK: record, replay, price and
budget every model call of a run (DESIGN §5-7)."""
