-- Video tasks. The object keys are derived from the id
-- (tasks/<id>/original, tasks/<id>/processed.mp4), so they are not stored.
CREATE TABLE tasks (
    id             BLOB PRIMARY KEY,
    owner_id       BLOB NOT NULL,
    status         TEXT NOT NULL DEFAULT 'uploaded'
                   CHECK (status IN ('uploaded', 'processing', 'processed', 'failed')),
    progress       INTEGER NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    file_name      TEXT NOT NULL,
    content_type   TEXT NOT NULL,
    original_size  INTEGER NOT NULL CHECK (original_size > 0),
    processed_size INTEGER,
    failure_reason TEXT,
    last_error     TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    version        INTEGER NOT NULL DEFAULT 1,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    CHECK ((status = 'processed') = (processed_size IS NOT NULL)),
    CHECK ((status = 'failed') = (failure_reason IS NOT NULL))
);
CREATE INDEX tasks_by_owner ON tasks (owner_id, id);
