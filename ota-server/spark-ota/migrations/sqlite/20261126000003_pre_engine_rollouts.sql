-- Rollouts made before the engine (migration 2) have no engine state: they end here (their
-- devices keep what they installed); create a new rollout to go on. Keep in step with ../postgres/.
-- (A separate migration so databases that applied 2 already get it too.)
UPDATE rollouts SET state = 'aborted', reason = 'created before the rollout engine; create a new rollout'
    WHERE engine IS NULL AND state <> 'aborted';
