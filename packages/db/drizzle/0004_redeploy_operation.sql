-- A redeploy: the workspace rebuilt on the current image, its volume kept, done once its agent is online again.
ALTER TYPE operation_kind ADD VALUE IF NOT EXISTS 'redeploy' AFTER 'restart';
