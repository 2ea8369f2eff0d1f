-- The sequence number of the readings batch that stored each row (`received.seq`), so the data
-- pipeline can consume a gateway's readings in order through a cursor (issue 8). Rows stored
-- before this migration keep 0.
ALTER TABLE readings ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
CREATE INDEX readings_gateway_seq ON readings (gateway, seq);
