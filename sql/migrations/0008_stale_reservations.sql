-- The sweeper's look for budget reservations nobody settled (a gateway that died mid-call):
-- runs whose summary holds an open reservation (every reservation holds input tokens).
CREATE INDEX stream_summaries_reserving_idx ON stream_summaries (updated_at)
    WHERE category = 'run' AND summary->'reserved'->>'input_tokens' <> '0';
