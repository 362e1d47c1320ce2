-- Ids of the events every control-plane replica's bus receives through NOTIFY (GET /cp/admin/events).
CREATE SEQUENCE cp_event_ids;
