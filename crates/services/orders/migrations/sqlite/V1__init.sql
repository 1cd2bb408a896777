CREATE TABLE orders (
    id               BLOB PRIMARY KEY,
    buyer_id         BLOB NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'reserved', 'paid', 'shipped', 'delivered', 'cancelled', 'failed')),
    reservation      TEXT NOT NULL DEFAULT 'none' CHECK (reservation IN ('none', 'held', 'committed', 'released')),
    failure_reason   TEXT,
    shipping_address TEXT NOT NULL,
    provider         TEXT NOT NULL CHECK (provider IN ('dhl', 'fedex', 'envia', 'servientrega')),
    card_token       TEXT NOT NULL,
    card_last4       TEXT NOT NULL,
    total_cents      INTEGER CHECK (total_cents >= 0),
    currency         TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX orders_buyer ON orders (buyer_id, id DESC);

CREATE TABLE order_items (
    order_id         BLOB NOT NULL REFERENCES orders (id),
    book_id          BLOB NOT NULL,
    quantity         INTEGER NOT NULL CHECK (quantity > 0),
    seller_id        BLOB,
    title            TEXT,
    unit_price_cents INTEGER CHECK (unit_price_cents > 0),
    currency         TEXT,
    PRIMARY KEY (order_id, book_id)
);

-- One charge per order: the simulated processor's own ledger, keyed by the
-- idempotency key the saga sends (the order id).
CREATE TABLE payment_charges (
    idempotency_key BLOB PRIMARY KEY,
    amount_cents    INTEGER NOT NULL CHECK (amount_cents > 0),
    currency        TEXT NOT NULL,
    card_last4      TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('captured', 'declined', 'refunded')),
    created_at      TEXT NOT NULL
);

CREATE TABLE shipments (
    order_id        BLOB PRIMARY KEY REFERENCES orders (id),
    provider        TEXT NOT NULL,
    tracking_number TEXT NOT NULL UNIQUE,
    status          TEXT NOT NULL CHECK (status IN ('label_created', 'in_transit', 'delivered')),
    updated_at      TEXT NOT NULL
);

CREATE TABLE idempotency_keys (
    buyer_id     BLOB NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    order_id     BLOB NOT NULL REFERENCES orders (id),
    created_at   TEXT NOT NULL,
    PRIMARY KEY (buyer_id, key)
);

-- Sellers' view, projected from order.paid events.
CREATE TABLE sales (
    order_id         BLOB NOT NULL,
    book_id          BLOB NOT NULL,
    seller_id        BLOB NOT NULL,
    buyer_id         BLOB NOT NULL,
    title            TEXT NOT NULL,
    quantity         INTEGER NOT NULL,
    unit_price_cents INTEGER NOT NULL,
    currency         TEXT NOT NULL,
    paid_at          TEXT NOT NULL,
    PRIMARY KEY (order_id, book_id)
);
CREATE INDEX sales_seller ON sales (seller_id, paid_at DESC);
