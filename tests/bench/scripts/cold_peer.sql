-- cold path, PL/pgSQL peer (bench_peer)
\set t random(2000000000000000000, 9223372036854775807)
\set n random(0, 9999)
\set o 1000000 + :n % 1000
\set p 2000000 + :n
SELECT * FROM bench_peer.upsert_job_by_thermos_id(:t, 'project', :o, :p, 'batch_revoke');
