-- The worker and the ledger find a job's session by its reservation; without
-- this index each lookup scanned every session, so the lookups grew slower
-- as a long run piled up rows.
CREATE INDEX generation_sessions_reservation ON generation_sessions (reservation_id);
