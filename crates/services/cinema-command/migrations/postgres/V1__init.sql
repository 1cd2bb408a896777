-- Every aggregate row keeps its latest `…saved` payload (`doc`) with the
-- columns that constraints and lookups need.
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE chains (
    id      UUID PRIMARY KEY,
    version BIGINT NOT NULL CHECK (version > 0),
    doc     JSONB NOT NULL
);

CREATE TABLE cinemas (
    id       UUID PRIMARY KEY,
    chain_id UUID NOT NULL REFERENCES chains (id),
    version  BIGINT NOT NULL CHECK (version > 0),
    doc      JSONB NOT NULL
);
CREATE INDEX cinemas_chain ON cinemas (chain_id);

CREATE TABLE rooms (
    id        UUID PRIMARY KEY,
    cinema_id UUID NOT NULL REFERENCES cinemas (id),
    version   BIGINT NOT NULL CHECK (version > 0),
    doc       JSONB NOT NULL
);
CREATE INDEX rooms_cinema ON rooms (cinema_id);

CREATE TABLE movies (
    id      UUID PRIMARY KEY,
    version BIGINT NOT NULL CHECK (version > 0),
    doc     JSONB NOT NULL
);

-- Scheduled showtimes of one room never overlap on [starts_at, ends_at):
-- the exclusion constraint refuses the second of two concurrent inserts.
CREATE TABLE showtimes (
    id               UUID PRIMARY KEY,
    room_id          UUID NOT NULL REFERENCES rooms (id),
    movie_id         UUID NOT NULL REFERENCES movies (id),
    version          BIGINT NOT NULL CHECK (version > 0),
    starts_at        TIMESTAMPTZ NOT NULL,
    ends_at          TIMESTAMPTZ NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('scheduled', 'cancelled')),
    seat_map_version BIGINT NOT NULL DEFAULT 0 CHECK (seat_map_version >= 0),
    doc              JSONB NOT NULL,
    CHECK (ends_at > starts_at),
    CONSTRAINT showtimes_no_overlap EXCLUDE USING gist (
        room_id WITH =,
        tstzrange(starts_at, ends_at) WITH &&
    ) WHERE (status = 'scheduled')
);
CREATE INDEX showtimes_movie ON showtimes (movie_id);

CREATE TABLE purchases (
    id               UUID PRIMARY KEY,
    showtime_id      UUID NOT NULL REFERENCES showtimes (id),
    customer_id      UUID NOT NULL,
    idempotency_key  TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('held', 'completed', 'declined', 'expired', 'refunded')),
    total_cents      BIGINT NOT NULL CHECK (total_cents >= 0),
    currency         TEXT NOT NULL,
    card_token       TEXT NOT NULL,
    card_last4       TEXT NOT NULL,
    seat_map_version BIGINT,
    held_until       TIMESTAMPTZ NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    CONSTRAINT purchases_idempotency UNIQUE (customer_id, idempotency_key)
);
CREATE INDEX purchases_held ON purchases (held_until) WHERE status = 'held';

-- A seat of a showtime is held or sold by at most one purchase: the
-- primary key. Released seats (declined, expired, refunded) lose their row.
CREATE TABLE seats (
    showtime_id UUID NOT NULL REFERENCES showtimes (id),
    seat        TEXT NOT NULL,
    purchase_id UUID NOT NULL REFERENCES purchases (id),
    state       TEXT NOT NULL CHECK (state IN ('held', 'sold')),
    class       TEXT NOT NULL,
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    PRIMARY KEY (showtime_id, seat)
);
CREATE INDEX seats_purchase ON seats (purchase_id);

CREATE TABLE tickets (
    id          UUID PRIMARY KEY,
    purchase_id UUID NOT NULL REFERENCES purchases (id),
    seat        TEXT NOT NULL,
    class       TEXT NOT NULL,
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    code        TEXT NOT NULL UNIQUE,
    UNIQUE (purchase_id, seat)
);

-- The event log: append-only, numbered from a one-row counter that every
-- appending transaction updates last. Its row lock is held until commit, so
-- sequence numbers commit in order and a reader paging with `after` never
-- skips an event that commits later with a lower number.
CREATE TABLE event_counter (
    id   SMALLINT PRIMARY KEY CHECK (id = 1),
    last BIGINT NOT NULL
);
INSERT INTO event_counter (id, last) VALUES (1, 0);

CREATE TABLE event_log (
    seq         BIGINT PRIMARY KEY,
    id          UUID NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    payload     JSONB NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL
);
CREATE FUNCTION event_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'event_log is append-only';
END
$$;
CREATE TRIGGER event_log_append_only BEFORE UPDATE OR DELETE ON event_log
    FOR EACH ROW EXECUTE FUNCTION event_log_append_only();
