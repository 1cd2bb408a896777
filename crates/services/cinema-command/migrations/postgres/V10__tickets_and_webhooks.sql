-- Ticket documents, the customer's address for them, and webhooks.

-- Where to email a purchase's tickets: the buyer's address from their
-- token, kept apart from the purchase because not every token has one.
CREATE TABLE purchase_contacts (
    purchase_id UUID PRIMARY KEY REFERENCES purchases (id),
    email       TEXT NOT NULL CHECK (length(email) BETWEEN 3 AND 320)
);

-- A purchase's PDF is in object storage (written once per purchase; the
-- row is inserted with `tickets.document_ready`, so the event is too).
CREATE TABLE ticket_documents (
    purchase_id  UUID PRIMARY KEY REFERENCES purchases (id),
    object_key   TEXT NOT NULL,
    stored_at    TIMESTAMPTZ NOT NULL,
    email_status TEXT NOT NULL DEFAULT 'pending'
        CHECK (email_status IN ('pending', 'sent', 'skipped', 'failed')),
    emailed_at   TIMESTAMPTZ
);

-- Webhooks a cinema's managers registered. The secret signs deliveries,
-- so it is kept as it is (it cannot be hashed) and shown once.
CREATE TABLE webhooks (
    id         UUID PRIMARY KEY,
    cinema_id  UUID NOT NULL REFERENCES cinemas (id) ON DELETE CASCADE,
    url        TEXT NOT NULL CHECK (length(url) BETWEEN 8 AND 2048),
    secret     TEXT NOT NULL,
    created_by UUID NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (cinema_id, url)
);

-- Every delivery attempt, newest last; removed with its webhook.
CREATE TABLE webhook_deliveries (
    seq          BIGSERIAL PRIMARY KEY,
    webhook_id   UUID NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id     UUID NOT NULL,
    event_kind   TEXT NOT NULL,
    attempt      INTEGER NOT NULL CHECK (attempt > 0),
    max_attempts INTEGER NOT NULL CHECK (max_attempts > 0),
    status       INTEGER,
    error        TEXT,
    duration_ms  BIGINT NOT NULL CHECK (duration_ms >= 0),
    outcome      TEXT NOT NULL CHECK (outcome IN ('delivered', 'retrying', 'gave_up')),
    at           TIMESTAMPTZ NOT NULL,
    UNIQUE (webhook_id, event_id, attempt)
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, seq);
