-- The job leases of a cluster (job.Leases): each job runs on the one
-- node that holds its lease, until lease_until (a stamp, NULL when no
-- node holds it). Each take raises lease_epoch, and every write of the
-- engine about the job's devices and counts checks it (herd_fence), so
-- that a node that lost the lease (killed, frozen, cut off) writes
-- nothing more of the job once another node took it.
ALTER TABLE jobs ADD COLUMN lease_node text COLLATE "C";
ALTER TABLE jobs ADD COLUMN lease_epoch bigint NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN lease_until text COLLATE "C";

-- herd_fence locks job j's row for the transaction if the job's lease is
-- still at epoch e, and raises SQLSTATE HL001 (the statement and its
-- transaction fail) if it is not: a node took the lease since.
CREATE FUNCTION herd_fence(j text, e bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	PERFORM FROM jobs WHERE job_id = j AND lease_epoch = e FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'the lease of job % at epoch % was taken by another node', j, e USING ERRCODE = 'HL001';
	END IF;
END $$;
