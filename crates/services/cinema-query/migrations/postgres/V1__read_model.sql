-- The cinema read models: denormalised JSON documents, found by the columns
-- beside them. A deleted aggregate keeps a tombstone (deleted, body null) so
-- that an older event arriving late is recognised and ignored.
CREATE TABLE documents (
    kind        TEXT NOT NULL CHECK (kind IN ('chain', 'cinema', 'room', 'movie', 'showtime', 'seat_map', 'purchase')),
    id          UUID NOT NULL,
    version     BIGINT NOT NULL CHECK (version >= 0),
    deleted     BOOLEAN NOT NULL DEFAULT false,
    chain_id    UUID,
    cinema_id   UUID,
    room_id     UUID,
    movie_id    UUID,
    showtime_id UUID,
    customer_id UUID,
    city        TEXT,
    name        TEXT,
    at          TIMESTAMPTZ,
    status      TEXT,
    body        JSONB NOT NULL,
    PRIMARY KEY (kind, id)
);

CREATE INDEX documents_chain ON documents (kind, chain_id) WHERE NOT deleted;
CREATE INDEX documents_cinema ON documents (kind, cinema_id) WHERE NOT deleted;
CREATE INDEX documents_room ON documents (kind, room_id) WHERE NOT deleted;
CREATE INDEX documents_movie ON documents (kind, movie_id, at) WHERE NOT deleted;
CREATE INDEX documents_showtime ON documents (kind, showtime_id) WHERE NOT deleted;
CREATE INDEX documents_customer ON documents (kind, customer_id, at) WHERE NOT deleted;
CREATE INDEX documents_city ON documents (kind, city, name) WHERE NOT deleted;
CREATE INDEX documents_at ON documents (kind, at) WHERE NOT deleted;
CREATE INDEX documents_name ON documents (kind, name) WHERE NOT deleted;

-- How far the projection got: one row.
CREATE TABLE projection (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    last_event_id    UUID,
    last_occurred_at TIMESTAMPTZ,
    last_applied_at  TIMESTAMPTZ,
    log_seq          BIGINT NOT NULL DEFAULT 0,
    applied          BIGINT NOT NULL DEFAULT 0,
    ignored          BIGINT NOT NULL DEFAULT 0
);
INSERT INTO projection (id) VALUES (1);
