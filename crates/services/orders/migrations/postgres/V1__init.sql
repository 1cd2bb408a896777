CREATE TABLE orders (
    id               UUID PRIMARY KEY,
    buyer_id         UUID NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'reserved', 'paid', 'shipped', 'delivered', 'cancelled', 'failed')),
    reservation      TEXT NOT NULL DEFAULT 'none' CHECK (reservation IN ('none', 'held', 'committed', 'released')),
    failure_reason   TEXT,
    shipping_address TEXT NOT NULL,
    provider         TEXT NOT NULL CHECK (provider IN ('dhl', 'fedex', 'envia', 'servientrega')),
    card_token       TEXT NOT NULL,
    card_last4       TEXT NOT NULL,
    total_cents      BIGINT CHECK (total_cents >= 0),
    currency         TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX orders_buyer ON orders (buyer_id, id DESC);

CREATE TABLE order_items (
    order_id         UUID NOT NULL REFERENCES orders (id),
    book_id          UUID NOT NULL,
    quantity         INTEGER NOT NULL CHECK (quantity > 0),
    seller_id        UUID,
    title            TEXT,
    unit_price_cents BIGINT CHECK (unit_price_cents > 0),
    currency         TEXT,
    PRIMARY KEY (order_id, book_id)
);

-- One charge per order: the simulated processor's own ledger, keyed by the
-- idempotency key the saga sends (the order id).
CREATE TABLE payment_charges (
    idempotency_key UUID PRIMARY KEY,
    amount_cents    BIGINT NOT NULL CHECK (amount_cents > 0),
    currency        TEXT NOT NULL,
    card_last4      TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('captured', 'declined', 'refunded')),
    created_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE shipments (
    order_id        UUID PRIMARY KEY REFERENCES orders (id),
    provider        TEXT NOT NULL,
    tracking_number TEXT NOT NULL UNIQUE,
    status          TEXT NOT NULL CHECK (status IN ('label_created', 'in_transit', 'delivered')),
    updated_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE idempotency_keys (
    buyer_id     UUID NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    order_id     UUID NOT NULL REFERENCES orders (id),
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (buyer_id, key)
);

-- Sellers' view, projected from order.paid events.
CREATE TABLE sales (
    order_id         UUID NOT NULL,
    book_id          UUID NOT NULL,
    seller_id        UUID NOT NULL,
    buyer_id         UUID NOT NULL,
    title            TEXT NOT NULL,
    quantity         INTEGER NOT NULL,
    unit_price_cents BIGINT NOT NULL,
    currency         TEXT NOT NULL,
    paid_at          TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (order_id, book_id)
);
CREATE INDEX sales_seller ON sales (seller_id, paid_at DESC);
