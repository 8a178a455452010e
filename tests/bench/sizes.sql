-- On-disk size of apollo_jobs.jobs and each of its indexes (main fork,
-- after VACUUM), as `name|bytes|entries|detail` lines; the partial index
-- jobs_project_listing_idx (project_id, created_at DESC, job_id DESC) WHERE
-- project_id IS NOT NULL holds one entry per project job, the others
-- (jobs_pkey, jobs_thermos_job_id_key, jobs_org_listing_idx) one per row.
-- detail, when pgstattuple is installed: for the table, the average tuple
-- length (header included) and free space; for an index, pgstatindex's
-- average leaf density.
\set ON_ERROR_STOP 1
\pset format unaligned
\pset tuples_only on
WITH counts AS (
    SELECT count(*) AS rows, count(project_id) AS project_rows FROM apollo_jobs.jobs
), rels AS (
    SELECT c.oid, c.relname, c.relkind, pg_relation_size(c.oid) AS bytes,
           c.relkind = 'i' AND pg_get_indexdef(c.oid) LIKE '% WHERE %' AS partial
      FROM pg_class c
     WHERE c.oid = 'apollo_jobs.jobs'::regclass
        OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'apollo_jobs.jobs'::regclass)
), stats AS (
    SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'pgstattuple') AS available
)
SELECT r.relname, r.bytes,
       CASE WHEN r.partial THEN n.project_rows ELSE n.rows END,
       CASE WHEN NOT s.available THEN ''
            WHEN r.relkind = 'r' THEN
                (SELECT format('avg tuple %s B, free %s%%',
                               round(t.tuple_len::numeric / nullif(t.tuple_count, 0), 1),
                               round(t.free_percent::numeric, 1))
                   FROM pgstattuple(r.oid::regclass) t)
            ELSE (SELECT format('leaf density %s%%', round(i.avg_leaf_density::numeric, 1))
                    FROM pgstatindex(r.oid::regclass) i)
       END
  FROM rels r, counts n, stats s
 ORDER BY r.relkind DESC, r.relname;
