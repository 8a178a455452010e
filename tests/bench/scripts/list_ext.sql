-- listing, extension: the first page (50 rows, newest first) of the big
-- project (a tenth of the large table: 1M jobs at 10M rows; see
-- load_rows.sql). bench.sh passes its ids as -D big_org=.. -D big_project=..
SELECT * FROM apollo_jobs.list_jobs(:big_org, :big_project, page_size => 50);
