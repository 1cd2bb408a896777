-- Listings. Stock is the count available now: reservations take copies out
-- with a conditional update and the CHECK makes overdrawing impossible even
-- for a buggy caller.
--
-- `seq` is an explicit INTEGER PRIMARY KEY because the FTS5 index refers to
-- rows by rowid, and VACUUM may renumber an implicit rowid.
CREATE TABLE books (
    seq         INTEGER PRIMARY KEY,
    id          BLOB NOT NULL UNIQUE,
    seller_id   BLOB NOT NULL,
    title       TEXT NOT NULL,
    author      TEXT NOT NULL,
    -- lowercase author (folded in Rust: SQLite's lower() is ASCII-only)
    author_key  TEXT NOT NULL,
    isbn        TEXT NOT NULL CONSTRAINT books_isbn_digits
                CHECK (length(isbn) IN (10, 13) AND isbn NOT GLOB '*[^0-9X]*'
                       AND (instr(isbn, 'X') = 0 OR (length(isbn) = 10 AND instr(isbn, 'X') = 10))),
    description TEXT NOT NULL,
    condition   TEXT NOT NULL CONSTRAINT books_condition_known
                CHECK (condition IN ('new', 'like_new', 'good', 'acceptable')),
    price_cents INTEGER NOT NULL CONSTRAINT books_price_range
                CHECK (typeof(price_cents) = 'integer' AND price_cents > 0 AND price_cents <= 100000000),
    currency    TEXT NOT NULL CONSTRAINT books_currency_code
                CHECK (length(currency) = 3 AND currency NOT GLOB '*[^A-Z]*'),
    stock       INTEGER NOT NULL CONSTRAINT books_stock_non_negative
                CHECK (typeof(stock) = 'integer' AND stock >= 0),
    status      TEXT NOT NULL CONSTRAINT books_status_known
                CHECK (status IN ('active', 'withdrawn')),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX books_active_newest ON books (id DESC) WHERE status = 'active';
CREATE INDEX books_active_price ON books (price_cents, id) WHERE status = 'active';
CREATE INDEX books_seller ON books (seller_id, id DESC);
CREATE INDEX books_isbn ON books (isbn);

-- Full-text search over title, author and description, kept in step by
-- triggers; stock changes do not touch it.
CREATE VIRTUAL TABLE books_fts USING fts5 (
    title, author, description,
    content = 'books', content_rowid = 'seq', tokenize = 'porter unicode61'
);
CREATE TRIGGER books_fts_insert AFTER INSERT ON books BEGIN
    INSERT INTO books_fts (rowid, title, author, description)
    VALUES (new.seq, new.title, new.author, new.description);
END;
CREATE TRIGGER books_fts_delete AFTER DELETE ON books BEGIN
    INSERT INTO books_fts (books_fts, rowid, title, author, description)
    VALUES ('delete', old.seq, old.title, old.author, old.description);
END;
CREATE TRIGGER books_fts_update AFTER UPDATE OF title, author, description ON books BEGIN
    INSERT INTO books_fts (books_fts, rowid, title, author, description)
    VALUES ('delete', old.seq, old.title, old.author, old.description);
    INSERT INTO books_fts (rowid, title, author, description)
    VALUES (new.seq, new.title, new.author, new.description);
END;

CREATE TABLE reservations (
    id         BLOB PRIMARY KEY,
    status     TEXT NOT NULL CONSTRAINT reservations_status_known
               CHECK (status IN ('held', 'committed', 'released', 'expired')),
    -- RFC 3339-like UTC text of one fixed format: compares in time order
    expires_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX reservations_held_expiry ON reservations (expires_at) WHERE status = 'held';

CREATE TABLE reservation_items (
    reservation_id   BLOB NOT NULL REFERENCES reservations (id),
    book_id          BLOB NOT NULL REFERENCES books (id),
    quantity         INTEGER NOT NULL CONSTRAINT reservation_items_quantity_positive
                     CHECK (quantity > 0),
    unit_price_cents INTEGER NOT NULL CONSTRAINT reservation_items_price_positive
                     CHECK (unit_price_cents > 0),
    currency         TEXT NOT NULL,
    title            TEXT NOT NULL,
    seller_id        BLOB NOT NULL,
    position         INTEGER NOT NULL,
    PRIMARY KEY (reservation_id, book_id)
);
CREATE INDEX reservation_items_book ON reservation_items (book_id);
