-- The agent's inbound token: what the A2A proxy presents to the agent so it can refuse calls that bypass the platform.
ALTER TABLE workspaces ADD COLUMN inbound_token_sealed text, ADD COLUMN inbound_token_key_version integer;
