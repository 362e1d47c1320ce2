-- Warm pools back off after failed member starts: `failures` counts the rounds in a row whose start failed, and the
-- filler starts nothing in the pool before `next_attempt_at`. The last failure keeps its code and time beside its
-- message (`last_error`). A success, or a PUT /pools, clears all four.
ALTER TABLE pools ADD COLUMN last_error_code text;
ALTER TABLE pools ADD COLUMN last_error_at timestamptz;
ALTER TABLE pools ADD COLUMN failures integer NOT NULL DEFAULT 0;
ALTER TABLE pools ADD COLUMN next_attempt_at timestamptz;
