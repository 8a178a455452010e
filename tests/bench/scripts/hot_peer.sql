-- hot path, PL/pgSQL peer (bench_peer)
\set i 2 * random(0, (:rows - 1) / 2) + 1
\set t 1000000000000000000 + :i
\set o 1000000 + :i % 1000
\set p 2000000 + :i % 10000
SELECT * FROM bench_peer.upsert_job_by_thermos_id(:t, 'project', :o, :p, 'batch_revoke');
