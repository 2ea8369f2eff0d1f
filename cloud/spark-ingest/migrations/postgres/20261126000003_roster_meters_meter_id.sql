-- spark-api finds a meter by its id (`GET /v1/meters/{meter}`, a meter's readings and
-- consumption): `SELECT gateway, position FROM roster_meters WHERE meter_id = $1 ORDER BY
-- gateway`. Without this index that is a scan of every gateway's roster. Covering, so the
-- lookup never touches the table.
CREATE INDEX roster_meters_meter_id ON roster_meters (meter_id, gateway, position);
