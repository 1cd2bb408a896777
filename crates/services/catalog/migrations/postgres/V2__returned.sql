-- A committed reservation whose sale is undone (a paid order cancelled)
-- becomes `returned`, and its copies go back to stock.
ALTER TABLE reservations
    DROP CONSTRAINT reservations_status_known,
    ADD CONSTRAINT reservations_status_known
        CHECK (status IN ('held', 'committed', 'released', 'expired', 'returned'));
