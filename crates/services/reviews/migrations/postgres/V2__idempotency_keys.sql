-- Creating requests that carried an Idempotency-Key. The primary key makes
-- a second request with the same caller and key (a retry, possibly on
-- another instance) wait for the first one's transaction and then replay
-- its answer instead of creating again. No foreign key to the resource: a
-- review may be deleted while its key is still remembered.
CREATE TABLE idempotency_keys (
    caller        TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    resource_kind TEXT NOT NULL CHECK (resource_kind IN ('camera', 'lens', 'review')),
    resource_id   UUID NOT NULL,
    -- Written in the same transaction as the row, after the resource.
    response_body TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (caller, key)
);
-- Expired keys are swept oldest first.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
