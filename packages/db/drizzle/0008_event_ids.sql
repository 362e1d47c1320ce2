-- Ids of the events every replica's bus receives through NOTIFY (GET /events): unique across replicas, so a client
-- can resume with Last-Event-ID on any of them.
CREATE SEQUENCE platform_event_ids;
