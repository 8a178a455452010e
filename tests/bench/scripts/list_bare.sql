-- listing floor: the same first page as a bare keyset SELECT: list_jobs'
-- page statement for a project (src/reads.rs, with the scope checks
-- src/scopes.rs visibility() builds for this binding: for one project the
-- org and project rows are checked once, on the ids, not per row) without
-- the function, SPI and job_type plumbing, read from the same index
-- (jobs_project_listing_idx) and planned with list_jobs' settings
-- (enable_sort, enable_seqscan off, generic plans; bench.sh passes them in
-- PGOPTIONS). Without them, the generic plan pgbench -M prepared
-- settles on (a handful of rows estimated for the project) can be a
-- BitmapAnd of the two listing indexes or a bitmap scan plus a Sort of the
-- whole project: a million rows sorted per page at 10M rows, which is no
-- floor. The org test stays a filter ((...) IS TRUE), as in list_jobs, so the
-- scan keeps the project index's order.
-- bench.sh passes the ids as -D big_org=.. -D big_project=..
SELECT j.job_id, j.job_class, j.org_id, j.project_id, j.job_type, j.thermos_job_id, j.created_at
  FROM apollo_jobs.jobs j
 WHERE j.project_id = :big_project AND (j.org_id = :big_org) IS TRUE
   AND EXISTS (SELECT FROM public.orgs o WHERE o.nano_id = :big_org AND o.deleted IS FALSE)
   AND EXISTS (SELECT FROM public.projects p WHERE p.nano_id = :big_project AND p.deleted IS FALSE)
 ORDER BY j.created_at DESC, j.job_id DESC LIMIT 50;
