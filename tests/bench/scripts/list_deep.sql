-- listing, extension: a keyset page deep in the big project: starting_after
-- is the job_id of the row BENCH_LIST_DEPTH (20,000) rows deep, newest first,
-- which bench.sh looks up after the load and passes as -D deep=..
SELECT * FROM apollo_jobs.list_jobs(:big_org, :big_project, starting_after => :deep, page_size => 50);
