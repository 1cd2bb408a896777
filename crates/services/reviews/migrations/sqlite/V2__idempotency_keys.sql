-- Creating requests that carried an Idempotency-Key. The primary key makes
-- a second request with the same caller and key replay the first one's
-- answer instead of creating again. No foreign key to the resource: a
-- review may be deleted while its key is still remembered.
CREATE TABLE idempotency_keys (
    caller        TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    resource_kind TEXT NOT NULL CHECK (resource_kind IN ('camera', 'lens', 'review')),
    resource_id   BLOB NOT NULL,
    -- Written in the same transaction as the row, after the resource.
    response_body TEXT,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (caller, key)
);
-- Expired keys are swept oldest first.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
