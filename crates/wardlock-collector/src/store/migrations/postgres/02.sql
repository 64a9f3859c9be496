CREATE TABLE forward_state (name TEXT PRIMARY KEY, last_id BIGINT NOT NULL);
