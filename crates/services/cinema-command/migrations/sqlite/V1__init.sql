-- Every aggregate row keeps its latest `…saved` payload (`doc`) with the
-- columns that constraints and lookups need. Times compared in SQL are
-- unix milliseconds, which order correctly as integers.
CREATE TABLE chains (
    id      BLOB PRIMARY KEY,
    version INTEGER NOT NULL CHECK (version > 0),
    doc     TEXT NOT NULL
);

CREATE TABLE cinemas (
    id       BLOB PRIMARY KEY,
    chain_id BLOB NOT NULL REFERENCES chains (id),
    version  INTEGER NOT NULL CHECK (version > 0),
    doc      TEXT NOT NULL
);
CREATE INDEX cinemas_chain ON cinemas (chain_id);

CREATE TABLE rooms (
    id        BLOB PRIMARY KEY,
    cinema_id BLOB NOT NULL REFERENCES cinemas (id),
    version   INTEGER NOT NULL CHECK (version > 0),
    doc       TEXT NOT NULL
);
CREATE INDEX rooms_cinema ON rooms (cinema_id);

CREATE TABLE movies (
    id      BLOB PRIMARY KEY,
    version INTEGER NOT NULL CHECK (version > 0),
    doc     TEXT NOT NULL
);

-- Overlaps of scheduled showtimes in one room are refused inside the
-- writing transaction (SQLite has no exclusion constraints; its single
-- writer makes check-then-insert safe).
CREATE TABLE showtimes (
    id               BLOB PRIMARY KEY,
    room_id          BLOB NOT NULL REFERENCES rooms (id),
    movie_id         BLOB NOT NULL REFERENCES movies (id),
    version          INTEGER NOT NULL CHECK (version > 0),
    starts_ms        INTEGER NOT NULL,
    ends_ms          INTEGER NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('scheduled', 'cancelled')),
    seat_map_version INTEGER NOT NULL DEFAULT 0 CHECK (seat_map_version >= 0),
    doc              TEXT NOT NULL,
    CHECK (ends_ms > starts_ms)
);
CREATE INDEX showtimes_room ON showtimes (room_id, starts_ms);
CREATE INDEX showtimes_movie ON showtimes (movie_id);

CREATE TABLE purchases (
    id               BLOB PRIMARY KEY,
    showtime_id      BLOB NOT NULL REFERENCES showtimes (id),
    customer_id      BLOB NOT NULL,
    idempotency_key  TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('held', 'completed', 'declined', 'expired', 'refunded')),
    total_cents      INTEGER NOT NULL CHECK (total_cents >= 0),
    currency         TEXT NOT NULL,
    card_token       TEXT NOT NULL,
    card_last4       TEXT NOT NULL,
    seat_map_version INTEGER,
    held_until_ms    INTEGER NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    -- One purchase per key and customer: a retry finds the first.
    UNIQUE (customer_id, idempotency_key)
);
CREATE INDEX purchases_held ON purchases (held_until_ms) WHERE status = 'held';

-- A seat of a showtime is held or sold by at most one purchase: the
-- primary key. Released seats (declined, expired, refunded) lose their row.
CREATE TABLE seats (
    showtime_id BLOB NOT NULL REFERENCES showtimes (id),
    seat        TEXT NOT NULL,
    purchase_id BLOB NOT NULL REFERENCES purchases (id),
    state       TEXT NOT NULL CHECK (state IN ('held', 'sold')),
    class       TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
    PRIMARY KEY (showtime_id, seat)
);
CREATE INDEX seats_purchase ON seats (purchase_id);

CREATE TABLE tickets (
    id          BLOB PRIMARY KEY,
    purchase_id BLOB NOT NULL REFERENCES purchases (id),
    seat        TEXT NOT NULL,
    class       TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
    code        TEXT NOT NULL UNIQUE,
    UNIQUE (purchase_id, seat)
);

-- The event log: append-only, numbered in commit order (SQLite has one
-- writer, so AUTOINCREMENT is already in commit order).
CREATE TABLE event_log (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          BLOB NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    occurred_at TEXT NOT NULL
);
CREATE TRIGGER event_log_no_update BEFORE UPDATE ON event_log
BEGIN SELECT RAISE(ABORT, 'event_log is append-only'); END;
CREATE TRIGGER event_log_no_delete BEFORE DELETE ON event_log
BEGIN SELECT RAISE(ABORT, 'event_log is append-only'); END;
