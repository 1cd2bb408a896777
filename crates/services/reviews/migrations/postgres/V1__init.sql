CREATE TABLE cameras (
    id         UUID PRIMARY KEY,
    brand      TEXT NOT NULL,
    model      TEXT NOT NULL,
    sensor     TEXT NOT NULL,
    megapixels DOUBLE PRECISION NOT NULL CHECK (megapixels > 0),
    released   INTEGER CHECK (released BETWEEN 1900 AND 2100),
    created_at TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX cameras_brand_model_key ON cameras (lower(brand), lower(model));

CREATE TABLE lenses (
    id           UUID PRIMARY KEY,
    brand        TEXT NOT NULL,
    model        TEXT NOT NULL,
    mount        TEXT NOT NULL,
    focal_min_mm DOUBLE PRECISION NOT NULL CHECK (focal_min_mm > 0),
    focal_max_mm DOUBLE PRECISION NOT NULL,
    max_aperture DOUBLE PRECISION NOT NULL CHECK (max_aperture > 0),
    created_at   TIMESTAMPTZ NOT NULL,
    CONSTRAINT lenses_focal_range CHECK (focal_max_mm >= focal_min_mm)
);
CREATE UNIQUE INDEX lenses_brand_model_key ON lenses (lower(brand), lower(model));

CREATE TABLE reviews (
    id          UUID PRIMARY KEY,
    title       TEXT NOT NULL,
    content     TEXT NOT NULL,
    rating      SMALLINT NOT NULL CONSTRAINT reviews_rating_range CHECK (rating BETWEEN 1 AND 5),
    camera_id   UUID REFERENCES cameras (id),
    lens_id     UUID REFERENCES lenses (id),
    editor_id   UUID NOT NULL,
    editor_name TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    search      TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', title || ' ' || content)) STORED,
    CONSTRAINT reviews_exactly_one_target CHECK ((camera_id IS NULL) <> (lens_id IS NULL))
);
CREATE INDEX reviews_camera ON reviews (camera_id, id DESC);
CREATE INDEX reviews_lens ON reviews (lens_id, id DESC);
CREATE INDEX reviews_editor ON reviews (editor_id, id DESC);
CREATE INDEX reviews_search ON reviews USING GIN (search);
