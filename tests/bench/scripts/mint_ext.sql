SELECT count(apollo_jobs.mint_job_id('org')) FROM generate_series(1, 1000);
