-- The key version that sealed an operation's input, so it opens with its own key after the secrets key rotates.
-- Rows from before this column have NULL: they open with whichever configured key authenticates them.
ALTER TABLE operations ADD COLUMN sealed_key_version integer;
