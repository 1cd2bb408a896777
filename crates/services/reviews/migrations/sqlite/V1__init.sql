CREATE TABLE cameras (
    id         BLOB PRIMARY KEY,
    brand      TEXT NOT NULL,
    model      TEXT NOT NULL,
    sensor     TEXT NOT NULL,
    megapixels REAL NOT NULL CHECK (megapixels > 0),
    released   INTEGER CHECK (released BETWEEN 1900 AND 2100),
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX cameras_brand_model_key ON cameras (lower(brand), lower(model));

CREATE TABLE lenses (
    id           BLOB PRIMARY KEY,
    brand        TEXT NOT NULL,
    model        TEXT NOT NULL,
    mount        TEXT NOT NULL,
    focal_min_mm REAL NOT NULL CHECK (focal_min_mm > 0),
    focal_max_mm REAL NOT NULL,
    max_aperture REAL NOT NULL CHECK (max_aperture > 0),
    created_at   TEXT NOT NULL,
    CONSTRAINT lenses_focal_range CHECK (focal_max_mm >= focal_min_mm)
);
CREATE UNIQUE INDEX lenses_brand_model_key ON lenses (lower(brand), lower(model));

CREATE TABLE reviews (
    id          BLOB PRIMARY KEY,
    title       TEXT NOT NULL,
    content     TEXT NOT NULL,
    rating      INTEGER NOT NULL CONSTRAINT reviews_rating_range CHECK (rating BETWEEN 1 AND 5),
    camera_id   BLOB REFERENCES cameras (id),
    lens_id     BLOB REFERENCES lenses (id),
    editor_id   BLOB NOT NULL,
    editor_name TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    CONSTRAINT reviews_exactly_one_target CHECK ((camera_id IS NULL) <> (lens_id IS NULL))
);
CREATE INDEX reviews_camera ON reviews (camera_id, id DESC);
CREATE INDEX reviews_lens ON reviews (lens_id, id DESC);
CREATE INDEX reviews_editor ON reviews (editor_id, id DESC);

-- Full-text search over title and content, kept in step by triggers.
CREATE VIRTUAL TABLE reviews_fts USING fts5 (
    title, content, content = 'reviews', content_rowid = 'rowid', tokenize = 'porter unicode61'
);
CREATE TRIGGER reviews_fts_insert AFTER INSERT ON reviews BEGIN
    INSERT INTO reviews_fts (rowid, title, content) VALUES (new.rowid, new.title, new.content);
END;
CREATE TRIGGER reviews_fts_delete AFTER DELETE ON reviews BEGIN
    INSERT INTO reviews_fts (reviews_fts, rowid, title, content) VALUES ('delete', old.rowid, old.title, old.content);
END;
CREATE TRIGGER reviews_fts_update AFTER UPDATE OF title, content ON reviews BEGIN
    INSERT INTO reviews_fts (reviews_fts, rowid, title, content) VALUES ('delete', old.rowid, old.title, old.content);
    INSERT INTO reviews_fts (rowid, title, content) VALUES (new.rowid, new.title, new.content);
END;
