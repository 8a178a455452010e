-- The host application's tables (tests/fixture/host.sql, the definition every
-- suite shares), loaded first: the other tests run in this database.
\getenv abs_srcdir PG_ABS_SRCDIR
\set fixture :abs_srcdir '/../fixture/host.sql'
\i :fixture
