-- A committed reservation whose sale is undone (a paid order cancelled)
-- becomes `returned`, and its copies go back to stock.
--
-- SQLite cannot change a CHECK in place, so both reservation tables are
-- rebuilt and their rows copied. The items go first when dropping (they
-- refer to reservations, and foreign keys are enforced); renaming the new
-- reservations table rewrites the new items table's reference to it.
CREATE TABLE reservations_v2 (
    id         BLOB PRIMARY KEY,
    status     TEXT NOT NULL CONSTRAINT reservations_status_known
               CHECK (status IN ('held', 'committed', 'released', 'expired', 'returned')),
    -- RFC 3339-like UTC text of one fixed format: compares in time order
    expires_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
INSERT INTO reservations_v2 (id, status, expires_at, created_at, updated_at)
    SELECT id, status, expires_at, created_at, updated_at FROM reservations;

CREATE TABLE reservation_items_v2 (
    reservation_id   BLOB NOT NULL REFERENCES reservations_v2 (id),
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
INSERT INTO reservation_items_v2
    (reservation_id, book_id, quantity, unit_price_cents, currency, title, seller_id, position)
    SELECT reservation_id, book_id, quantity, unit_price_cents, currency, title, seller_id, position
    FROM reservation_items;

DROP TABLE reservation_items;
DROP TABLE reservations;
ALTER TABLE reservations_v2 RENAME TO reservations;
ALTER TABLE reservation_items_v2 RENAME TO reservation_items;

CREATE INDEX reservations_held_expiry ON reservations (expires_at) WHERE status = 'held';
CREATE INDEX reservation_items_book ON reservation_items (book_id);
