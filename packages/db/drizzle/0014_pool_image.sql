-- The image a warm pool fills with, decided in one place so that replicas started with different
-- WORKSPACE_IMAGE_TAGs (a rolling upgrade) agree on which members are on an old image: the newest filler's (it
-- started at `image_since`) while it keeps renewing its claim (`image_seen_at`, each round); once that has gone quiet,
-- any filler's. Only fillers on this image start members of the pool; every filler retires members on another.
ALTER TABLE pools ADD COLUMN image text;
ALTER TABLE pools ADD COLUMN image_since timestamptz;
ALTER TABLE pools ADD COLUMN image_seen_at timestamptz;
