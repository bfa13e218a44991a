-- The worker and the ledger find a job's session by its reservation; without
-- this index each lookup scanned every session, so the mock slowed down as a
-- long run piled up rows (a 20,000-session database answered 3x slower).
CREATE INDEX generation_sessions_reservation ON generation_sessions (reservation_id);
