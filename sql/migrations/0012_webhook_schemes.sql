-- Webhook schemes (docs/webhooks.md): how a webhook's sender authenticates its calls. Every
-- webhook made so far checks Standard Webhooks signatures, the default.
ALTER TABLE webhooks ADD COLUMN scheme text NOT NULL DEFAULT 'standard'
    CHECK (scheme IN ('standard', 'bearer', 'github', 'stripe', 'slack'));
