-- When a worker last took or renewed each lease: the API shows a lease that is no longer
-- renewed (its worker is gone), and `papayya runs logs -f` counts down to its expiry.
ALTER TABLE run_leases ADD COLUMN renewed_at timestamptz NOT NULL DEFAULT now();
