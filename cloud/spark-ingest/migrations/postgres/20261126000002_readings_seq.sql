-- The sequence number of the readings batch that stored each row (`received.seq`), so the data
-- pipeline can consume a gateway's readings in order through a cursor (issue 8). Rows stored
-- before this migration keep 0. On a partitioned table both statements reach every partition.
ALTER TABLE readings ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX readings_gateway_seq ON readings (gateway, seq);
