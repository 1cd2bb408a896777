-- Listings. Stock is the count available now: reservations take copies out
-- with a conditional update and the CHECK makes overdrawing impossible even
-- for a buggy caller.
CREATE TABLE books (
    id          UUID PRIMARY KEY,
    seller_id   UUID NOT NULL,
    title       TEXT NOT NULL,
    author      TEXT NOT NULL,
    -- lowercase author, for the case-insensitive "contains" filter
    author_key  TEXT NOT NULL,
    isbn        TEXT NOT NULL CONSTRAINT books_isbn_digits
                CHECK (isbn ~ '^([0-9]{9}[0-9X]|[0-9]{13})$'),
    description TEXT NOT NULL,
    condition   TEXT NOT NULL CONSTRAINT books_condition_known
                CHECK (condition IN ('new', 'like_new', 'good', 'acceptable')),
    price_cents BIGINT NOT NULL CONSTRAINT books_price_range
                CHECK (price_cents > 0 AND price_cents <= 100000000),
    currency    TEXT NOT NULL CONSTRAINT books_currency_code CHECK (currency ~ '^[A-Z]{3}$'),
    stock       INTEGER NOT NULL CONSTRAINT books_stock_non_negative CHECK (stock >= 0),
    status      TEXT NOT NULL CONSTRAINT books_status_known
                CHECK (status IN ('active', 'withdrawn')),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    search      TSVECTOR GENERATED ALWAYS AS (
                    to_tsvector('english', title || ' ' || author || ' ' || description)
                ) STORED
);
CREATE INDEX books_active_newest ON books (id DESC) WHERE status = 'active';
CREATE INDEX books_active_price ON books (price_cents, id) WHERE status = 'active';
CREATE INDEX books_seller ON books (seller_id, id DESC);
CREATE INDEX books_isbn ON books (isbn);
CREATE INDEX books_search ON books USING GIN (search);

CREATE TABLE reservations (
    id         UUID PRIMARY KEY,
    status     TEXT NOT NULL CONSTRAINT reservations_status_known
               CHECK (status IN ('held', 'committed', 'released', 'expired')),
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
-- The expiry sweep looks only at held reservations, oldest expiry first.
CREATE INDEX reservations_held_expiry ON reservations (expires_at) WHERE status = 'held';

CREATE TABLE reservation_items (
    reservation_id   UUID NOT NULL REFERENCES reservations (id),
    book_id          UUID NOT NULL REFERENCES books (id),
    quantity         INTEGER NOT NULL CONSTRAINT reservation_items_quantity_positive
                     CHECK (quantity > 0),
    -- price, title and seller as they were when reserved
    unit_price_cents BIGINT NOT NULL CONSTRAINT reservation_items_price_positive
                     CHECK (unit_price_cents > 0),
    currency         TEXT NOT NULL,
    title            TEXT NOT NULL,
    seller_id        UUID NOT NULL,
    -- index in the request, to answer in the order asked
    position         INTEGER NOT NULL,
    PRIMARY KEY (reservation_id, book_id)
);
CREATE INDEX reservation_items_book ON reservation_items (book_id);
