-- The cinema read models: denormalised JSON documents, found by the columns
-- beside them. A deleted aggregate keeps a tombstone (deleted, body null) so
-- that an older event arriving late is recognised and ignored.
CREATE TABLE documents (
    kind        TEXT NOT NULL CHECK (kind IN ('chain', 'cinema', 'room', 'movie', 'showtime', 'seat_map', 'purchase')),
    id          BLOB NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 0),
    deleted     INTEGER NOT NULL DEFAULT 0,
    chain_id    BLOB,
    cinema_id   BLOB,
    room_id     BLOB,
    movie_id    BLOB,
    showtime_id BLOB,
    customer_id BLOB,
    city        TEXT,
    name        TEXT,
    at          TEXT,
    status      TEXT,
    body        TEXT NOT NULL CHECK (json_valid(body)),
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
    last_event_id    BLOB,
    last_occurred_at TEXT,
    last_applied_at  TEXT,
    log_seq          INTEGER NOT NULL DEFAULT 0,
    applied          INTEGER NOT NULL DEFAULT 0,
    ignored          INTEGER NOT NULL DEFAULT 0
);
INSERT INTO projection (id) VALUES (1);
