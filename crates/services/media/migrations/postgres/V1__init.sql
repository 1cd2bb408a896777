-- Video tasks. The object keys are derived from the id
-- (tasks/<id>/original, tasks/<id>/processed.mp4), so they are not stored.
CREATE TABLE tasks (
    id             uuid PRIMARY KEY,
    owner_id       uuid NOT NULL,
    status         text NOT NULL DEFAULT 'uploaded'
                   CHECK (status IN ('uploaded', 'processing', 'processed', 'failed')),
    progress       integer NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    file_name      text NOT NULL,
    content_type   text NOT NULL,
    original_size  bigint NOT NULL CHECK (original_size > 0),
    processed_size bigint,
    failure_reason text,
    last_error     text,
    attempts       integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    version        bigint NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    CHECK ((status = 'processed') = (processed_size IS NOT NULL)),
    CHECK ((status = 'failed') = (failure_reason IS NOT NULL))
);
CREATE INDEX tasks_by_owner ON tasks (owner_id, id);
