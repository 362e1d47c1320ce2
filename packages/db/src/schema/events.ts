import { pgSequence } from "drizzle-orm/pg-core";

/** Event ids (GET /events), drawn in the NOTIFY that publishes each event: unique on every replica. */
export const platformEventIds = pgSequence("platform_event_ids");
