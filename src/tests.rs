//! `#[pg_test]`s: every SQL function and every error path, as SQL calls them.
//!
//! Each test runs in its own transaction, rolled back afterwards, so each one
//! builds the host tables it needs. Error paths are asserted by SQLSTATE
//! through a PL/pgSQL helper that runs the statement in a subtransaction, and
//! the tests check that the failed call left the table as it was.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// The host application's tables as every test suite has them; their
    /// names are unqualified (see `host_tables_in`).
    const HOST_FIXTURE: &str = include_str!("../tests/fixture/host.sql");

    /// The rows the tests here share: two orgs with a project each.
    const HOST_ROWS: &str = r#"
        INSERT INTO host.orgs VALUES ('o1'), ('o2');
        INSERT INTO host.projects VALUES ('p1', 'o1'), ('p2', 'o2');
    "#;

    const HELPER: &str = r#"
        CREATE FUNCTION pg_temp.sqlstate_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
        BEGIN
            EXECUTE statement;
            RETURN '00000';
        EXCEPTION WHEN OTHERS THEN
            RETURN SQLSTATE;
        END $$;
        CREATE FUNCTION pg_temp.result_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
        DECLARE r text;
        BEGIN
            EXECUTE statement INTO r;
            RETURN r;
        EXCEPTION WHEN OTHERS THEN
            RETURN 'SQLSTATE ' || SQLSTATE;
        END $$;
        CREATE FUNCTION pg_temp.error_text_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
        DECLARE m text; d text; h text;
        BEGIN
            EXECUTE statement;
            RETURN NULL;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
            RETURN concat_ws(' | ', m, d, h);
        END $$;
    "#;

    fn run(sql: &str) {
        Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Creates the shared host tables (tests/fixture/host.sql) in a new
    /// schema: the fixture's names are unqualified, so it runs with the
    /// schema alone on the search_path, which is then put back.
    fn host_tables_in(schema: &str) {
        let search_path: String = one("SELECT current_setting('search_path')");
        run(&format!(
            "CREATE SCHEMA {schema}; SET LOCAL search_path = {schema}"
        ));
        run(HOST_FIXTURE);
        Spi::get_one_with_args::<String>(
            "SELECT set_config('search_path', $1, true)",
            &[search_path.into()],
        )
        .expect("restoring search_path");
    }

    /// The host tables in schema `host`, with the shared rows.
    fn host_tables() {
        host_tables_in("host");
        run(HOST_ROWS);
    }

    /// Host tables plus `create_jobs_table(orgs, projects)`.
    fn host() {
        helpers();
        host_tables();
        run("SELECT apollo_jobs.create_jobs_table(orgs => 'host.orgs', projects => 'host.projects')");
    }

    fn helpers() {
        run(HELPER);
    }

    fn sqlstate(sql: &str) -> String {
        Spi::get_one_with_args::<String>("SELECT pg_temp.sqlstate_of($1)", &[sql.into()])
            .expect("sqlstate_of")
            .expect("sqlstate_of returned null")
    }

    fn error_text(sql: &str) -> String {
        Spi::get_one_with_args::<String>("SELECT pg_temp.error_text_of($1)", &[sql.into()])
            .expect("error_text_of")
            .unwrap_or_else(|| panic!("no error from {sql}"))
    }

    fn one<T: FromDatum + IntoDatum>(sql: &str) -> T {
        Spi::get_one::<T>(sql)
            .expect(sql)
            .unwrap_or_else(|| panic!("{sql} returned null"))
    }

    fn jobs() -> i64 {
        one("SELECT count(*) FROM apollo_jobs.jobs")
    }

    fn upsert(thermos: &str, class: &str, org: &str, project: Option<&str>) -> (String, bool) {
        let (id, created) = Spi::get_two_with_args::<String, bool>(
            "SELECT job_id::text, created FROM apollo_jobs.upsert_job_by_thermos_id($1, $2, $3, $4, 'batch_revoke')",
            &[thermos.into(), class.into(), org.into(), project.into()],
        )
        .expect("upsert");
        (
            id.expect("job_id is null"),
            created.expect("created is null"),
        )
    }

    /// Table-driven SQLSTATE checks: each statement must fail with its code.
    /// `with host` cases run against the wired jobs table and also assert
    /// that the failed statement wrote nothing.
    macro_rules! sqlstate_cases {
        ($($name:ident ($setup:ident): $sql:expr => $code:expr;)*) => {$(
            #[pg_test]
            fn $name() {
                $setup();
                let before = if stringify!($setup) == "host" { jobs() } else { 0 };
                assert_eq!(sqlstate($sql), $code, "{}", $sql);
                if stringify!($setup) == "host" {
                    assert_eq!(jobs(), before, "a failed call wrote rows: {}", $sql);
                }
            }
        )*};
    }

    sqlstate_cases! {
        // mint_job_id
        mint_null_class (helpers): "SELECT apollo_jobs.mint_job_id(NULL)" => "22004";
        mint_unknown_class (helpers): "SELECT apollo_jobs.mint_job_id('Org')" => "22023";
        mint_empty_class (helpers): "SELECT apollo_jobs.mint_job_id('')" => "22023";
        // job_class_of
        class_of_malformed (helpers): "SELECT apollo_jobs.job_class_of('oj_short')" => "22P02";
        class_of_wrong_case (helpers): "SELECT apollo_jobs.job_class_of('OJ_V1StGXR8Z5jdHi6BmyT2a')" => "22P02";
        // domains
        domain_rejects_bad_id (helpers): "SELECT 'oj_bad'::apollo_jobs.job_id" => "23514";
        domain_rejects_22_symbols (helpers): "SELECT 'oj_V1StGXR8Z5jdHi6BmyT2ab'::apollo_jobs.job_id" => "23514";
        org_domain_rejects_pj (helpers): "SELECT 'pj_V1StGXR8Z5jdHi6BmyT2a'::apollo_jobs.org_job_id" => "23514";
        project_domain_rejects_oj (helpers): "SELECT 'oj_V1StGXR8Z5jdHi6BmyT2a'::apollo_jobs.project_job_id" => "23514";
        // the table not created yet
        upsert_without_table (helpers): "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('w', 'org', 'o1', NULL, 't')" => "55000";
        getter_without_table (helpers): "SELECT * FROM apollo_jobs.job_by_id('oj_V1StGXR8Z5jdHi6BmyT2a', 'o1')" => "55000";
        // create_jobs_table
        create_twice (host): "SELECT apollo_jobs.create_jobs_table()" => "42P07";
        // upsert arguments
        upsert_null_thermos (host): "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id(NULL, 'org', 'o1', NULL, 't')" => "22004";
        upsert_null_class (host): "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('w', NULL, 'o1', NULL, 't')" => "22004";
        upsert_null_org (host): "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('w', 'org', NULL, NULL, 't')" => "22004";
        upsert_null_type (host): "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('w', 'org', 'o1', NULL, NULL)" => "22004";
        upsert_empty_thermos (host): "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('', 'org', 'o1', NULL, 't')" => "22023";
        upsert_long_thermos (host): "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id(repeat('x', 1001), 'org', 'o1', NULL, 't')" => "22023";
        upsert_empty_org (host): "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('w', 'org', '', NULL, 't')" => "22023";
        upsert_long_org (host): "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('w', 'org', repeat('o', 256), NULL, 't')" => "22023";
        upsert_unknown_class (host): "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('w', 'team', 'o1', NULL, 't')" => "22023";
        upsert_project_for_org_job (host): "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('w', 'org', 'o1', 'p1', 't')" => "22023";
        upsert_no_project_for_project_job (host): "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('w', 'project', 'o1', NULL, 't')" => "22023";
        upsert_empty_project (host): "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('w', 'project', 'o1', '', 't')" => "22023";
        upsert_bad_job_type (host): "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('w', 'org', 'o1', NULL, 'Batch-Revoke')" => "22023";
        upsert_unknown_org (host): "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('w', 'org', 'nope', NULL, 't')" => "23503";
        upsert_unknown_project (host): "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('w', 'project', 'o1', 'nope', 't')" => "23503";
        // getter arguments
        getter_null_job_id (host): "SELECT * FROM apollo_jobs.job_by_id(NULL, 'o1')" => "22004";
        getter_null_org (host): "SELECT * FROM apollo_jobs.job_by_id('oj_V1StGXR8Z5jdHi6BmyT2a', NULL)" => "22004";
        // plain INSERTs meet the same rules as CHECKs
        insert_prefix_class_mismatch (host): "INSERT INTO apollo_jobs.jobs (job_id, job_class, org_id, job_type, thermos_job_id) VALUES ('pj_V1StGXR8Z5jdHi6BmyT2a', 'org', 'o1', 't', 'w')" => "23514";
        insert_malformed_id (host): "INSERT INTO apollo_jobs.jobs (job_id, job_class, org_id, job_type, thermos_job_id) VALUES ('oj_nope', 'org', 'o1', 't', 'w')" => "23514";
        insert_org_job_with_project (host): "INSERT INTO apollo_jobs.jobs (job_id, job_class, org_id, project_id, job_type, thermos_job_id) VALUES ('oj_V1StGXR8Z5jdHi6BmyT2a', 'org', 'o1', 'p1', 't', 'w')" => "23514";
        insert_project_job_without_project (host): "INSERT INTO apollo_jobs.jobs (job_id, job_class, org_id, job_type, thermos_job_id) VALUES ('pj_V1StGXR8Z5jdHi6BmyT2a', 'project', 'o1', 't', 'w')" => "23514";
        insert_bad_job_type (host): "INSERT INTO apollo_jobs.jobs (job_id, job_class, org_id, job_type, thermos_job_id) VALUES ('oj_V1StGXR8Z5jdHi6BmyT2a', 'org', 'o1', 'Bad', 'w')" => "23514";
        insert_empty_thermos (host): "INSERT INTO apollo_jobs.jobs (job_id, job_class, org_id, job_type, thermos_job_id) VALUES ('oj_V1StGXR8Z5jdHi6BmyT2a', 'org', 'o1', 't', '')" => "23514";
        insert_unknown_class (host): "INSERT INTO apollo_jobs.jobs (job_id, job_class, org_id, job_type, thermos_job_id) VALUES ('oj_V1StGXR8Z5jdHi6BmyT2a', 'team', 'o1', 't', 'w')" => "23514";
    }

    #[pg_test]
    fn mint_brands_ids_by_class() {
        for (class, prefix) in [("org", "oj_"), ("project", "pj_")] {
            let id: String = one(&format!("SELECT apollo_jobs.mint_job_id('{class}')::text"));
            assert!(id.starts_with(prefix), "{id}");
            assert!(one::<bool>(&format!(
                "SELECT apollo_jobs.job_id_is_valid('{id}')"
            )));
            assert_eq!(
                one::<String>(&format!("SELECT apollo_jobs.job_class_of('{id}')")),
                class
            );
        }
        let distinct: i64 = one(
            "SELECT count(DISTINCT apollo_jobs.mint_job_id('org')) FROM generate_series(1, 10000)",
        );
        assert_eq!(distinct, 10000);
    }

    #[pg_test]
    fn job_id_is_valid_never_raises() {
        let cases: &[(&str, Option<bool>)] = &[
            ("'oj_V1StGXR8Z5jdHi6BmyT2a'", Some(true)),
            ("'pj_V1StGXR8Z5jdHi6BmyT2a'", Some(true)),
            ("'oj_V1StGXR8Z5jdHi6BmyT2'", Some(false)),
            ("'oj_V1StGXR8Z5jdHi6BmyT2ab'", Some(false)),
            ("'Oj_V1StGXR8Z5jdHi6BmyT2a'", Some(false)),
            ("'oj__1StGXR8Z5jdHi6BmyT2a'", Some(false)),
            ("'oj_V1StGXR8Z5jdHi6BmyT2' || chr(1072)", Some(false)),
            ("repeat('x', 100000)", Some(false)),
            ("''", Some(false)),
            ("E'oj_V1StGXR8Z5jdHi6Bmy\\t2a'", Some(false)),
            ("NULL", None),
        ];
        for (expr, want) in cases {
            let got = Spi::get_one::<bool>(&format!("SELECT apollo_jobs.job_id_is_valid({expr})"))
                .expect(expr);
            assert_eq!(got, *want, "{expr}");
        }
    }

    #[pg_test]
    fn create_jobs_table_reports_missing_columns_by_name() {
        helpers();
        host_tables();
        let text = error_text(
            "SELECT apollo_jobs.create_jobs_table(orgs => 'host.orgs', org_key => 'org_nano')",
        );
        assert!(text.contains("\"org_nano\""), "{text}");
        assert_eq!(
            sqlstate(
                "SELECT apollo_jobs.create_jobs_table(orgs => 'host.orgs', org_key => 'org_nano')"
            ),
            "42703"
        );
        assert_eq!(
            sqlstate("SELECT apollo_jobs.create_jobs_table(projects => 'host.projects', deleted_column => 'gone')"),
            "42703"
        );
        assert_eq!(
            sqlstate(
                "SELECT apollo_jobs.create_jobs_table(orgs => 'host.orgs', org_key => 'ctid')"
            ),
            "42703"
        );
        assert_eq!(
            sqlstate("SELECT apollo_jobs.create_jobs_table(orgs => 'host.orgs', deleted_column => 'nano_id')"),
            "42804"
        );
        assert_eq!(
            sqlstate("SELECT apollo_jobs.create_jobs_table(orgs => 'host.orgs', org_key => NULL)"),
            "22004"
        );
        assert_eq!(
            sqlstate("SELECT apollo_jobs.create_jobs_table(orgs => 999999999::oid::regclass)"),
            "42P01"
        );
        let tables: i64 = one("SELECT count(*) FROM pg_class WHERE relnamespace = 'apollo_jobs'::regnamespace AND relkind IN ('r', 'v') AND relname <> 'scopes'");
        assert_eq!(
            tables, 0,
            "a failed create_jobs_table left relations behind"
        );
    }

    #[pg_test]
    fn create_jobs_table_quotes_identifiers() {
        helpers();
        run(r#"CREATE SCHEMA "Host Schema";
               CREATE TABLE "Host Schema"."Org Table" ("Org Key" text PRIMARY KEY, "Is Deleted" boolean);
               INSERT INTO "Host Schema"."Org Table" VALUES ('o"1', false);"#);
        run(
            r#"SELECT apollo_jobs.create_jobs_table(orgs => '"Host Schema"."Org Table"', org_key => 'Org Key', deleted_column => 'Is Deleted')"#,
        );
        let (id, created) = upsert("w1", "org", "o\"1", None);
        assert!(created);
        let visible: i64 = one(&format!(
            "SELECT count(*) FROM apollo_jobs.job_by_id('{id}', 'o\"1')"
        ));
        assert_eq!(visible, 1);
        run(r#"UPDATE "Host Schema"."Org Table" SET "Is Deleted" = true"#);
        let visible: i64 = one(&format!(
            "SELECT count(*) FROM apollo_jobs.job_by_id('{id}', 'o\"1')"
        ));
        assert_eq!(visible, 0);
    }

    #[pg_test]
    fn upsert_creates_then_echoes() {
        host();
        let (id, created) = upsert("wf-1", "org", "o1", None);
        assert!(created);
        assert!(id.starts_with("oj_"));
        let (again, created) = upsert("wf-1", "org", "o1", None);
        assert!(!created);
        assert_eq!(again, id);
        let (pid, created) = upsert("wf-2", "project", "o1", Some("p1"));
        assert!(created && pid.starts_with("pj_"));
        assert_eq!(upsert("wf-2", "project", "o1", Some("p1")), (pid, false));
        assert_eq!(jobs(), 2);
    }

    #[pg_test]
    fn upsert_always_returns_exactly_one_row() {
        host();
        for _ in 0..2 {
            let rows: i64 = one("SELECT count(*) FROM apollo_jobs.upsert_job_by_thermos_id('wf', 'org', 'o1', NULL, 't') WHERE job_id IS NOT NULL AND created IS NOT NULL");
            assert_eq!(rows, 1);
        }
    }

    /// The echo path neither inserts a row nor runs an INSERT statement.
    #[pg_test]
    fn echo_path_attempts_no_insert() {
        host();
        run(r#"CREATE TABLE pg_temp.insert_statements (n int);
               INSERT INTO pg_temp.insert_statements VALUES (0);
               CREATE FUNCTION pg_temp.count_insert() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN UPDATE pg_temp.insert_statements SET n = n + 1; RETURN NULL; END $$;
               CREATE TRIGGER count_insert BEFORE INSERT ON apollo_jobs.jobs
                 FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.count_insert();"#);
        upsert("wf-1", "org", "o1", None);
        let statements = || one::<i32>("SELECT n FROM pg_temp.insert_statements");
        let inserted = || {
            one::<i64>("SELECT n_tup_ins FROM pg_stat_xact_user_tables WHERE relid = 'apollo_jobs.jobs'::regclass")
        };
        assert_eq!(statements(), 1);
        let rows_before = inserted();
        for _ in 0..5 {
            assert!(!upsert("wf-1", "org", "o1", None).1);
        }
        assert_eq!(statements(), 1, "the echo path ran an INSERT");
        assert_eq!(inserted(), rows_before, "the echo path inserted rows");
    }

    /// A thermos id registered for one scope is a 23505 for any other scope,
    /// class or job type, and the error names neither the job nor the owner.
    #[pg_test]
    fn thermos_id_taken_by_another_scope() {
        host();
        let (id, _) = upsert("wf-1", "project", "o1", Some("p1"));
        let others = [
            "'wf-1', 'project', 'o2', 'p2', 'batch_revoke'",
            "'wf-1', 'project', 'o1', 'p2', 'batch_revoke'",
            "'wf-1', 'org', 'o1', NULL, 'batch_revoke'",
            "'wf-1', 'project', 'o1', 'p1', 'other_type'",
        ];
        for args in others {
            let sql = format!("SELECT * FROM apollo_jobs.upsert_job_by_thermos_id({args})");
            assert_eq!(sqlstate(&sql), "23505", "{args}");
            let text = error_text(&sql);
            for secret in [id.as_str(), "p1", "o1'"] {
                assert!(!text.contains(secret), "error discloses {secret}: {text}");
            }
        }
        assert_eq!(jobs(), 1);
    }

    #[pg_test]
    fn getter_is_tenant_scoped() {
        host();
        let (org_job, _) = upsert("wf-org", "org", "o1", None);
        let (prj_job, _) = upsert("wf-prj", "project", "o1", Some("p1"));
        let rows = |job: &str, org: &str, project: Option<&str>| -> i64 {
            Spi::get_one_with_args::<i64>(
                "SELECT count(*) FROM apollo_jobs.job_by_id($1, $2, $3)",
                &[job.into(), org.into(), project.into()],
            )
            .expect("job_by_id")
            .expect("count")
        };
        assert_eq!(rows(&org_job, "o1", None), 1);
        assert_eq!(rows(&prj_job, "o1", Some("p1")), 1);
        assert_eq!(rows(&org_job, "o2", None), 0, "other org");
        assert_eq!(
            rows(&org_job, "o1", Some("p1")),
            0,
            "org job asked with a project"
        );
        assert_eq!(
            rows(&prj_job, "o1", None),
            0,
            "project job asked without its project"
        );
        assert_eq!(rows(&prj_job, "o1", Some("p2")), 0, "other project");
        assert_eq!(
            rows(&prj_job, "o2", Some("p1")),
            0,
            "project under the wrong org"
        );
        assert_eq!(rows("oj_short", "o1", None), 0, "malformed id");
        assert_eq!(rows(&repeat_x(100_000), "o1", None), 0, "100 KB id");

        let row = Spi::get_three_with_args::<String, String, String>(
            "SELECT job_class, job_type, thermos_job_id FROM apollo_jobs.job_by_id($1, 'o1', 'p1')",
            &[prj_job.as_str().into()],
        )
        .expect("row");
        assert_eq!(
            row,
            (
                Some("project".into()),
                Some("batch_revoke".into()),
                Some("wf-prj".into())
            )
        );

        run("UPDATE host.projects SET deleted = true WHERE nano_id = 'p1'");
        assert_eq!(rows(&prj_job, "o1", Some("p1")), 0, "soft-deleted project");
        assert_eq!(
            rows(&org_job, "o1", None),
            1,
            "org job unaffected by a project's deletion"
        );
        run("UPDATE host.orgs SET deleted = true WHERE nano_id = 'o1'");
        assert_eq!(rows(&org_job, "o1", None), 0, "soft-deleted org");
    }

    fn repeat_x(n: usize) -> String {
        "x".repeat(n)
    }

    #[pg_test]
    fn no_soft_delete_filter_when_deleted_column_is_null() {
        helpers();
        host_tables();
        run("SELECT apollo_jobs.create_jobs_table(orgs => 'host.orgs', deleted_column => NULL)");
        let (id, _) = upsert("wf", "org", "o1", None);
        run("UPDATE host.orgs SET deleted = true");
        let visible: i64 = one(&format!(
            "SELECT count(*) FROM apollo_jobs.job_by_id('{id}', 'o1')"
        ));
        assert_eq!(visible, 1);
    }

    #[pg_test]
    fn without_scope_tables_there_are_no_foreign_keys() {
        helpers();
        run("SELECT apollo_jobs.create_jobs_table()");
        let fks: i64 = one("SELECT count(*) FROM pg_constraint WHERE conrelid = 'apollo_jobs.jobs'::regclass AND contype = 'f'");
        assert_eq!(fks, 0);
        let (id, created) = upsert("wf", "project", "any-org", Some("any-project"));
        assert!(created);
        let visible: i64 = one(&format!(
            "SELECT count(*) FROM apollo_jobs.job_by_id('{id}', 'any-org', 'any-project')"
        ));
        assert_eq!(visible, 1);
    }

    #[pg_test]
    fn deleting_an_org_cascades_to_its_jobs() {
        host();
        upsert("wf-1", "org", "o1", None);
        upsert("wf-2", "project", "o1", Some("p1"));
        upsert("wf-3", "org", "o2", None);
        run("DELETE FROM host.projects WHERE nano_id = 'p1'");
        assert_eq!(jobs(), 2);
        run("DELETE FROM host.orgs WHERE nano_id = 'o1'");
        assert_eq!(jobs(), 1);
        let left: String = one("SELECT thermos_job_id FROM apollo_jobs.jobs");
        assert_eq!(left, "wf-3");
    }

    /// Kept plans follow the table through DROP and re-CREATE in one backend.
    #[pg_test]
    fn plans_follow_a_recreated_table() {
        host();
        upsert("wf-1", "org", "o1", None);
        run("DROP TABLE apollo_jobs.jobs CASCADE");
        assert_eq!(sqlstate("SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-1', 'org', 'o1', NULL, 't')"), "55000");
        assert_eq!(
            sqlstate("SELECT * FROM apollo_jobs.job_by_id('oj_V1StGXR8Z5jdHi6BmyT2a', 'o1')"),
            "55000"
        );
        run("SELECT apollo_jobs.create_jobs_table(orgs => 'host.orgs')");
        let (id, created) = upsert("wf-1", "org", "o1", None);
        assert!(created, "the old table's row must not be seen");
        let visible: i64 = one(&format!(
            "SELECT count(*) FROM apollo_jobs.job_by_id('{id}', 'o1')"
        ));
        assert_eq!(visible, 1);
    }

    /// The table's one CHECK: the row rules as a function that never raises,
    /// NULL when a NOT NULL column is NULL.
    #[pg_test]
    fn job_row_is_valid_applies_the_row_rules() {
        let ok = "'oj_V1StGXR8Z5jdHi6BmyT2a', 'org', 'o1', NULL, 'batch_revoke', 'wf'";
        for (args, want) in [
            (ok.to_string(), Some(true)),
            (
                "'pj_V1StGXR8Z5jdHi6BmyT2a', 'project', 'o1', 'p1', 't', 'wf'".into(),
                Some(true),
            ),
            (
                "'pj_V1StGXR8Z5jdHi6BmyT2a', 'org', 'o1', NULL, 't', 'wf'".into(),
                Some(false),
            ),
            (
                "'oj_nope', 'org', 'o1', NULL, 't', 'wf'".into(),
                Some(false),
            ),
            (
                "'oj_V1StGXR8Z5jdHi6BmyT2a', 'org', 'o1', 'p1', 't', 'wf'".into(),
                Some(false),
            ),
            (
                "'oj_V1StGXR8Z5jdHi6BmyT2a', 'org', repeat('o', 256), NULL, 't', 'wf'".into(),
                Some(false),
            ),
            (
                "'oj_V1StGXR8Z5jdHi6BmyT2a', 'org', 'o1', NULL, 'Bad', 'wf'".into(),
                Some(false),
            ),
            (
                "'oj_V1StGXR8Z5jdHi6BmyT2a', 'org', 'o1', NULL, 't', ''".into(),
                Some(false),
            ),
            (
                "'oj_V1StGXR8Z5jdHi6BmyT2a', 'team', 'o1', NULL, 't', 'wf'".into(),
                Some(false),
            ),
            ("NULL, 'org', 'o1', NULL, 't', 'wf'".into(), None),
            (
                "'oj_V1StGXR8Z5jdHi6BmyT2a', 'org', 'o1', NULL, 't', NULL".into(),
                None,
            ),
        ] {
            let got = Spi::get_one::<bool>(&format!("SELECT apollo_jobs.job_row_is_valid({args})"))
                .expect("job_row_is_valid");
            assert_eq!(got, want, "job_row_is_valid({args})");
        }
    }

    /// The table made by create_jobs_table() has exactly one CHECK, the row rules.
    #[pg_test]
    fn the_table_has_one_check_calling_the_row_rules() {
        host();
        let checks: String = one(
            "SELECT string_agg(conname || ' ' || pg_get_constraintdef(oid), ';') FROM pg_constraint \
             WHERE conrelid = 'apollo_jobs.jobs'::regclass AND contype = 'c'",
        );
        assert_eq!(
            checks,
            "jobs_row_check CHECK (apollo_jobs.job_row_is_valid(job_id, job_class, org_id, project_id, job_type, thermos_job_id))"
        );
    }

    /// A library newer than the installed SQL objects (the update not run)
    /// makes create_jobs_table() ask for ALTER EXTENSION ... UPDATE.
    #[pg_test]
    fn create_jobs_table_asks_for_the_update() {
        helpers();
        run("ALTER EXTENSION apollo_jobs DROP TABLE apollo_jobs.scopes");
        run("DROP TABLE apollo_jobs.scopes");
        assert_eq!(sqlstate("SELECT apollo_jobs.create_jobs_table()"), "55000");
        assert!(error_text("SELECT apollo_jobs.create_jobs_table()")
            .contains("ALTER EXTENSION apollo_jobs UPDATE"));
    }

    /// The relation OIDs kept per backend follow renames: a renamed table is
    /// a missing table, and renaming it back brings its rows back.
    #[pg_test]
    fn kept_oids_follow_renames() {
        host();
        let (id, _) = upsert("wf-1", "org", "o1", None);
        run("ALTER TABLE apollo_jobs.jobs RENAME TO jobs_away");
        assert_eq!(sqlstate("SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-1', 'org', 'o1', NULL, 't')"), "55000");
        run("ALTER TABLE apollo_jobs.jobs_away RENAME TO jobs");
        assert_eq!(upsert("wf-1", "org", "o1", None), (id.clone(), false));
        run("ALTER INDEX apollo_jobs.jobs_thermos_job_id_key RENAME TO thermos_away");
        assert_eq!(
            upsert("wf-1", "org", "o1", None),
            (id, false),
            "the SQL path answers"
        );
    }

    /// The direct probe reads only the index `create_jobs_table()` made: an
    /// index of the same name on another column sends the call down the SQL
    /// path (which finds the row), instead of probing the wrong key.
    #[pg_test]
    fn probe_declines_an_index_it_does_not_know() {
        host();
        let (id, _) = upsert("wf-1", "org", "o1", None);
        run("ALTER TABLE apollo_jobs.jobs DROP CONSTRAINT jobs_thermos_job_id_key");
        run("CREATE UNIQUE INDEX jobs_thermos_job_id_key ON apollo_jobs.jobs (job_type, thermos_job_id)");
        assert_eq!(upsert("wf-1", "org", "o1", None), (id, false));
    }

    /// Under row-level security the probe declines and the SQL path applies
    /// the policies: the caller echoes rows it may see, and a row hidden
    /// from it is neither returned nor written over (42501 from the policy).
    #[pg_test]
    fn probe_declines_under_row_level_security() {
        host();
        let (hidden, _) = upsert("wf-1", "org", "o1", None);
        let (visible, _) = upsert("wf-2", "org", "o2", None);
        run("CREATE ROLE apollo_jobs_rls_test");
        run("GRANT USAGE ON SCHEMA apollo_jobs TO apollo_jobs_rls_test");
        run("GRANT SELECT, INSERT ON apollo_jobs.jobs TO apollo_jobs_rls_test");
        run("ALTER TABLE apollo_jobs.jobs ENABLE ROW LEVEL SECURITY");
        run("CREATE POLICY only_o2 ON apollo_jobs.jobs USING (org_id = 'o2')");
        run("SET LOCAL ROLE apollo_jobs_rls_test");
        assert_eq!(upsert("wf-2", "org", "o2", None), (visible, false));
        let call =
            "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-1', 'org', 'o1', NULL, 't')";
        assert_eq!(sqlstate(call), "42501");
        assert!(
            !error_text(call).contains(&hidden),
            "the hidden row's id leaked"
        );
        run("RESET ROLE");
        assert_eq!(jobs(), 2);
    }

    /// Arguments stored compressed or out of line (TOAST) are read like
    /// inline ones: a valid compressed thermos id registers and echoes, an
    /// oversized out-of-line one gets its 22023, not an internal error.
    #[pg_test]
    fn toasted_arguments_are_detoasted() {
        host();
        run("CREATE TEMP TABLE args (a text, b text, c text)");
        run("INSERT INTO args SELECT repeat('a', 1000), repeat('b', 1000), repeat('c', 1000)");
        let compressed: String = one(
            "SELECT CASE WHEN pg_column_compression(a) IS NOT NULL THEN 'a' \
                         WHEN pg_column_compression(b) IS NOT NULL THEN 'b' ELSE 'c' END FROM args",
        );
        let stored: Option<String> = Spi::get_one(&format!(
            "SELECT pg_column_compression({compressed}) FROM args"
        ))
        .expect("pg_column_compression");
        assert!(stored.is_some(), "no argument column was stored compressed");
        let call = format!(
            "SELECT u.job_id::text, u.created FROM args, \
             LATERAL apollo_jobs.upsert_job_by_thermos_id(args.{compressed}, 'org', 'o1', NULL, 't') u"
        );
        let first = Spi::get_two::<String, bool>(&call).expect("first call");
        let second = Spi::get_two::<String, bool>(&call).expect("second call");
        assert_eq!(first.1, Some(true));
        assert_eq!(second, (first.0.clone(), Some(false)));
        let thermos: i32 = one("SELECT octet_length(thermos_job_id) FROM apollo_jobs.jobs");
        assert_eq!(thermos, 1000);

        run("CREATE TEMP TABLE big (v text)");
        run("ALTER TABLE big ALTER COLUMN v SET STORAGE EXTERNAL");
        run("INSERT INTO big SELECT string_agg(md5(i::text), '') FROM generate_series(1, 3200) i");
        // 100 KB, uncompressed, in a one-page heap: only a TOAST pointer is inline.
        let out_of_line: bool = one(
            "SELECT pg_column_compression(v) IS NULL AND octet_length(v) = 102400 \
                    AND pg_relation_size('big') <= 8192 FROM big",
        );
        assert!(out_of_line, "the value is not stored out of line");
        assert_eq!(
            sqlstate("SELECT * FROM big, LATERAL apollo_jobs.upsert_job_by_thermos_id(big.v, 'org', 'o1', NULL, 't')"),
            "22023"
        );
        assert_eq!(jobs(), 1);
    }

    #[pg_test]
    fn every_function_is_security_invoker_with_declared_volatility() {
        let rows = Spi::connect(|client| {
            client
                .select(
                    "SELECT p.proname::text, p.prosecdef, p.provolatile::text FROM pg_proc p
                     JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
                     JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'apollo_jobs'
                     WHERE p.pronamespace = 'apollo_jobs'::regnamespace
                     ORDER BY 1",
                    None,
                    &[],
                )
                .expect("pg_proc")
                .map(|row| {
                    (
                        row.get::<String>(1).expect("name").expect("name"),
                        row.get::<bool>(2).expect("secdef").expect("secdef"),
                        row.get::<String>(3).expect("vol").expect("vol"),
                    )
                })
                .collect::<Vec<_>>()
        });
        let expected = [
            ("bind_scopes", "v"),
            ("create_jobs_table", "v"),
            ("job_by_id", "s"),
            ("job_class_of", "i"),
            ("job_id_is_valid", "i"),
            ("job_row_is_valid", "i"),
            ("jobs_refuse_update", "v"),
            ("list_jobs", "s"),
            ("mint_job_id", "v"),
            ("scopes_changed", "v"),
            ("upsert_job_by_thermos_id", "v"),
        ];
        let got: Vec<(&str, &str)> = rows
            .iter()
            .map(|(n, _, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(got, expected);
        assert!(
            rows.iter().all(|(_, secdef, _)| !secdef),
            "a SECURITY DEFINER function: {rows:?}"
        );
    }

    #[pg_test]
    fn drop_extension_refuses_while_the_table_exists() {
        host();
        upsert("wf-1", "org", "o1", None);
        assert_eq!(sqlstate("DROP EXTENSION apollo_jobs"), "2BP01");
        assert_eq!(jobs(), 1);
    }

    /// Runs `f` in a subtransaction that is rolled back afterwards (SPI
    /// cannot run SAVEPOINT).
    fn rolled_back<R>(f: impl FnOnce() -> R) -> R {
        // SAFETY: begin/rollback pair around `f`, restoring the memory
        // context and resource owner as PL/pgSQL does.
        unsafe {
            let context = pg_sys::CurrentMemoryContext;
            let owner = pg_sys::CurrentResourceOwner;
            pg_sys::BeginInternalSubTransaction(std::ptr::null());
            pg_sys::MemoryContextSwitchTo(context);
            let result = f();
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
            result
        }
    }

    /// Probe outcomes in this backend (test builds only).
    #[pg_extern]
    fn probe_answered() -> i64 {
        crate::probe::counters::ANSWERED.with(std::cell::Cell::get)
    }

    /// The upsert with the probe on, then the same call with it off: the
    /// answers (or SQLSTATEs) must be equal. Returns whether the probe
    /// answered the first call.
    fn probe_vs_sql(thermos: &str, class: &str, org: &str, project: Option<&str>) -> bool {
        let call = format!(
            "SELECT CASE WHEN created THEN 'created' ELSE job_id::text END FROM apollo_jobs.upsert_job_by_thermos_id('{thermos}', '{class}', '{org}', {}, 'batch_revoke')",
            project.map_or("NULL".to_string(), |p| format!("'{p}'"))
        );
        let answer = |sql: &str| -> String {
            Spi::get_one_with_args::<String>("SELECT pg_temp.result_of($1)", &[sql.into()])
                .expect("result_of")
                .unwrap_or_default()
        };
        let before: i64 = one("SELECT tests.probe_answered()");
        // Each call in a subtransaction rolled back, so a new registration
        // is new to both. The first runs with the current setting.
        let on = rolled_back(|| answer(&call));
        let answered = one::<i64>("SELECT tests.probe_answered()") > before;
        let off = rolled_back(|| {
            run("SET LOCAL apollo_jobs.enable_probe = off");
            answer(&call)
        });
        assert_eq!(on, off, "probe and SQL path disagree on {thermos}");
        answered
    }

    /// Table-driven: after each DDL a DBA may run, the probe either answers
    /// (the table is as create_jobs_table() made it, up to names) or
    /// declines, and the answer always equals the SQL path's.
    #[pg_test]
    fn probe_answers_only_when_it_equals_the_sql_path() {
        let cases: &[(&str, &str, bool)] = &[
            ("untouched", "", true),
            (
                "renamed index",
                "ALTER INDEX apollo_jobs.jobs_thermos_job_id_key RENAME TO some_other_name",
                true,
            ),
            (
                "swapped unique index",
                "CREATE UNIQUE INDEX jobs_thermos_new ON apollo_jobs.jobs (thermos_job_id);
                 ALTER TABLE apollo_jobs.jobs DROP CONSTRAINT jobs_thermos_job_id_key;
                 ALTER TABLE apollo_jobs.jobs ADD CONSTRAINT jobs_thermos_job_id_key UNIQUE USING INDEX jobs_thermos_new",
                true,
            ),
            (
                "inheritance child holding archived rows",
                "CREATE TABLE apollo_jobs.jobs_archive () INHERITS (apollo_jobs.jobs);
                 INSERT INTO apollo_jobs.jobs_archive SELECT * FROM apollo_jobs.jobs WHERE thermos_job_id = 'wf-1';
                 DELETE FROM ONLY apollo_jobs.jobs WHERE thermos_job_id = 'wf-1'",
                false,
            ),
            (
                "partitioned table",
                "ALTER TABLE apollo_jobs.jobs RENAME TO jobs_old;
                 ALTER INDEX apollo_jobs.jobs_thermos_job_id_key RENAME TO jobs_old_thermos_key;
                 CREATE TABLE apollo_jobs.jobs (LIKE apollo_jobs.jobs_old INCLUDING DEFAULTS) PARTITION BY HASH (thermos_job_id);
                 CREATE TABLE apollo_jobs.jobs_p0 PARTITION OF apollo_jobs.jobs FOR VALUES WITH (MODULUS 2, REMAINDER 0);
                 CREATE TABLE apollo_jobs.jobs_p1 PARTITION OF apollo_jobs.jobs FOR VALUES WITH (MODULUS 2, REMAINDER 1);
                 ALTER TABLE apollo_jobs.jobs ADD CONSTRAINT jobs_thermos_job_id_key UNIQUE (thermos_job_id);
                 INSERT INTO apollo_jobs.jobs SELECT * FROM apollo_jobs.jobs_old",
                false,
            ),
            (
                "job_id retyped to name",
                "ALTER TABLE apollo_jobs.jobs ALTER COLUMN job_id TYPE name",
                false,
            ),
            (
                "org_id retyped to varchar",
                "ALTER TABLE apollo_jobs.jobs ALTER COLUMN org_id TYPE varchar(255)",
                false,
            ),
            (
                "unique index with another collation than the column's",
                "ALTER TABLE apollo_jobs.jobs DROP CONSTRAINT jobs_thermos_job_id_key;
                 CREATE UNIQUE INDEX jobs_thermos_c ON apollo_jobs.jobs (thermos_job_id COLLATE \"POSIX\")",
                false,
            ),
            (
                "deferrable unique constraint",
                "ALTER TABLE apollo_jobs.jobs DROP CONSTRAINT jobs_thermos_job_id_key;
                 ALTER TABLE apollo_jobs.jobs ADD CONSTRAINT jobs_thermos_job_id_key UNIQUE (thermos_job_id) DEFERRABLE",
                false,
            ),
            (
                "unique index on two columns",
                "ALTER TABLE apollo_jobs.jobs DROP CONSTRAINT jobs_thermos_job_id_key;
                 CREATE UNIQUE INDEX jobs_thermos_job_id_key ON apollo_jobs.jobs (job_type, thermos_job_id)",
                false,
            ),
            (
                "partial unique index",
                "ALTER TABLE apollo_jobs.jobs DROP CONSTRAINT jobs_thermos_job_id_key;
                 CREATE UNIQUE INDEX jobs_thermos_job_id_key ON apollo_jobs.jobs (thermos_job_id) WHERE job_type <> 'x'",
                false,
            ),
            (
                "row-level security",
                "ALTER TABLE apollo_jobs.jobs ENABLE ROW LEVEL SECURITY;
                 CREATE POLICY everything ON apollo_jobs.jobs USING (true);
                 CREATE ROLE apollo_jobs_probe_rls;
                 GRANT USAGE ON SCHEMA apollo_jobs TO apollo_jobs_probe_rls;
                 GRANT SELECT, INSERT ON apollo_jobs.jobs TO apollo_jobs_probe_rls;
                 GRANT USAGE ON SCHEMA tests TO apollo_jobs_probe_rls;
                 SET LOCAL ROLE apollo_jobs_probe_rls",
                false,
            ),
            ("probe switched off", "SET LOCAL apollo_jobs.enable_probe = off", false),
        ];
        for (name, ddl, answers) in cases {
            rolled_back(|| probe_case(name, ddl, *answers));
        }
    }

    fn probe_case(name: &str, ddl: &str, answers: bool) {
        {
            host();
            let (org_id, _) = upsert("wf-1", "org", "o1", None);
            let (project_id, _) = upsert("wf-2", "project", "o1", Some("p1"));
            if !ddl.is_empty() {
                run(ddl);
            }
            let probed = [
                probe_vs_sql("wf-1", "org", "o1", None),
                probe_vs_sql("wf-2", "project", "o1", Some("p1")),
                probe_vs_sql("wf-2", "project", "o2", Some("p2")),
                probe_vs_sql("wf-new", "org", "o2", None),
            ];
            if name != "probe switched off" {
                // Echoes still give the registered ids, whichever path answered.
                assert_eq!(upsert("wf-1", "org", "o1", None), (org_id, false), "{name}");
                assert_eq!(
                    upsert("wf-2", "project", "o1", Some("p1")),
                    (project_id, false),
                    "{name}"
                );
            }
            assert!(
                probed.iter().all(|p| *p == answers),
                "{name}: probe answered {probed:?}, expected {answers}"
            );
        }
    }

    /// A BEFORE INSERT trigger that suppresses the row: a final 27000, not
    /// an endless retry, and nothing written.
    #[pg_test]
    fn a_suppressed_insert_is_27000() {
        host();
        run("CREATE FUNCTION pg_temp.swallow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
             CREATE TRIGGER swallow BEFORE INSERT ON apollo_jobs.jobs FOR EACH ROW EXECUTE FUNCTION pg_temp.swallow()");
        for probe in ["on", "off"] {
            run(&format!("SET LOCAL apollo_jobs.enable_probe = {probe}"));
            assert_eq!(
                sqlstate("SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-1', 'org', 'o1', NULL, 't')"),
                "27000"
            );
        }
        assert_eq!(jobs(), 0);
    }

    /// A unique index of the DBA's own (one job per org and type) refuses a
    /// registration: its own 23505 is the answer, never a 40001 that a
    /// retry cannot cure (REPEATABLE READ: tests/pg_regress/sql/contract.sql).
    #[pg_test]
    fn another_unique_index_answers_with_its_own_violation() {
        host();
        run("CREATE UNIQUE INDEX jobs_one_per_type ON apollo_jobs.jobs (org_id, job_type)");
        upsert("wf-1", "org", "o1", None);
        let call = "SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-2', 'org', 'o1', NULL, 'batch_revoke')";
        for probe in ["on", "off"] {
            let (state, text) = rolled_back(|| {
                run(&format!("SET LOCAL apollo_jobs.enable_probe = {probe}"));
                (sqlstate(call), error_text(call))
            });
            assert_eq!(state, "23505", "probe {probe}");
            assert!(text.contains("jobs_one_per_type"), "{text}");
        }
        assert_eq!(jobs(), 1);
    }

    /// A BEFORE INSERT trigger that changes the row (here: moves it to
    /// another org) is caught: 27000, and the changed row is not stored.
    #[pg_test]
    fn an_altered_insert_is_27000() {
        host();
        run("CREATE FUNCTION pg_temp.move_org() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.org_id := 'o2'; RETURN NEW; END $$;
             CREATE TRIGGER move_org BEFORE INSERT ON apollo_jobs.jobs FOR EACH ROW EXECUTE FUNCTION pg_temp.move_org()");
        assert_eq!(
            sqlstate("SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-1', 'org', 'o1', NULL, 't')"),
            "27000"
        );
        assert_eq!(jobs(), 0);
        run("DROP TRIGGER move_org ON apollo_jobs.jobs");
        assert!(upsert("wf-1", "org", "o1", None).1);
    }

    /// Another tenant's registration hidden by row-level security: 23505
    /// (final, nothing of the row disclosed), never 40001.
    #[pg_test]
    fn a_conflict_hidden_by_row_level_security_is_23505() {
        host();
        let (hidden, _) = upsert("wf-1", "org", "o1", None);
        run("CREATE ROLE apollo_jobs_rls_writer");
        run("GRANT USAGE ON SCHEMA apollo_jobs TO apollo_jobs_rls_writer");
        run("GRANT SELECT, INSERT ON apollo_jobs.jobs TO apollo_jobs_rls_writer");
        run("GRANT SELECT ON host.orgs, host.projects TO apollo_jobs_rls_writer");
        run("ALTER TABLE apollo_jobs.jobs ENABLE ROW LEVEL SECURITY");
        run("CREATE POLICY read_o2 ON apollo_jobs.jobs FOR SELECT USING (org_id = 'o2')");
        run("CREATE POLICY write_any ON apollo_jobs.jobs FOR INSERT WITH CHECK (true)");
        run("SET LOCAL ROLE apollo_jobs_rls_writer");
        // A row it could read, on a thermos id taken by a row it cannot: 23505.
        // A row it could not read back at all: the policies refuse it (42501).
        for (args, code) in [
            ("'wf-1', 'org', 'o2', NULL", "23505"),
            ("'wf-1', 'org', 'o1', NULL", "42501"),
            ("'wf-3', 'org', 'o1', NULL", "42501"),
        ] {
            let call = format!("SELECT * FROM apollo_jobs.upsert_job_by_thermos_id({args}, 't')");
            assert_eq!(sqlstate(&call), code, "{call}");
            assert!(!error_text(&call).contains(&hidden), "the hidden id leaked");
        }
        let (mine, created) = upsert("wf-2", "org", "o2", None);
        assert!(created);
        assert_eq!(upsert("wf-2", "org", "o2", None), (mine, false));
        run("RESET ROLE");
        assert_eq!(jobs(), 2);
    }

    /// Writes in a read-only transaction are 25006; reads and echoes work.
    #[pg_test]
    fn read_only_transactions_refuse_writes_only() {
        host();
        let (id, _) = upsert("wf-1", "org", "o1", None);
        run("SET LOCAL transaction_read_only = on");
        for probe in ["on", "off"] {
            run(&format!("SET LOCAL apollo_jobs.enable_probe = {probe}"));
            assert_eq!(upsert("wf-1", "org", "o1", None), (id.clone(), false));
            assert_eq!(
                sqlstate("SELECT * FROM apollo_jobs.upsert_job_by_thermos_id('wf-new', 'org', 'o1', NULL, 't')"),
                "25006"
            );
        }
        assert_eq!(sqlstate("SELECT apollo_jobs.create_jobs_table()"), "25006");
        assert_eq!(
            sqlstate("SELECT apollo_jobs.bind_scopes('host.orgs')"),
            "25006"
        );
        let seen: i64 = one(&format!(
            "SELECT count(*) FROM apollo_jobs.job_by_id('{id}', 'o1')"
        ));
        assert_eq!(seen, 1);
        let listed: i64 = one("SELECT count(*) FROM apollo_jobs.list_jobs('o1')");
        assert_eq!(listed, 1);
        let minted: String = one("SELECT apollo_jobs.mint_job_id('org')::text");
        assert!(minted.starts_with("oj_"));
    }

    /// Registrations are immutable for every role, the owner included; the
    /// documented escape hatch (disable the trigger) works for the owner.
    #[pg_test]
    fn updates_are_refused_with_an_escape_hatch() {
        host();
        upsert("wf-1", "org", "o1", None);
        for update in [
            "UPDATE apollo_jobs.jobs SET org_id = 'o2'",
            "UPDATE apollo_jobs.jobs SET thermos_job_id = 'wf-9'",
            "UPDATE apollo_jobs.jobs SET job_id = job_id",
            "UPDATE apollo_jobs.jobs SET job_type = 'x' WHERE false",
        ] {
            assert_eq!(sqlstate(update), "0A000", "{update}");
        }
        run("ALTER TABLE apollo_jobs.jobs DISABLE TRIGGER jobs_immutable");
        run("UPDATE apollo_jobs.jobs SET job_type = 'repaired'");
        run("ALTER TABLE apollo_jobs.jobs ENABLE TRIGGER jobs_immutable");
        let job_type: String = one("SELECT job_type FROM apollo_jobs.jobs");
        assert_eq!(job_type, "repaired");
    }

    /// DROP EXTENSION ... CASCADE keeps every row, id, key and index of the table.
    #[pg_test]
    fn drop_extension_cascade_keeps_a_complete_table() {
        host();
        let (id, _) = upsert("wf-1", "org", "o1", None);
        run("DROP EXTENSION apollo_jobs CASCADE");
        let kept: String = one("SELECT job_id FROM apollo_jobs.jobs WHERE thermos_job_id = 'wf-1'");
        assert_eq!(kept, id);
        // PostgreSQL 18 also lists NOT NULL as constraints (contype 'n');
        // those are checked through attnotnull, the same on every major.
        let constraints: String = one(
            "SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint WHERE conrelid = 'apollo_jobs.jobs'::regclass AND contype <> 'n'",
        );
        assert_eq!(
            constraints,
            "jobs_org_id_fkey,jobs_pkey,jobs_project_id_fkey,jobs_thermos_job_id_key"
        );
        let not_null: String = one(
            "SELECT string_agg(attname, ',' ORDER BY attname) FROM pg_attribute WHERE attrelid = 'apollo_jobs.jobs'::regclass AND attnum > 0 AND attnotnull AND NOT attisdropped",
        );
        assert_eq!(
            not_null,
            "created_at,job_class,job_id,job_type,org_id,thermos_job_id"
        );
        let indexes: i64 =
            one("SELECT count(*) FROM pg_index WHERE indrelid = 'apollo_jobs.jobs'::regclass");
        assert_eq!(indexes, 4);
    }

    /// Soft-delete columns may be boolean (true or null = deleted) or a
    /// timestamp (not null = deleted), per table; other types are refused.
    #[pg_test]
    fn bindings_take_boolean_or_timestamp_soft_deletes() {
        host();
        run("ALTER TABLE host.projects ADD COLUMN deleted_at timestamptz, ADD COLUMN note text, ADD COLUMN ref uuid");
        run("SELECT apollo_jobs.bind_scopes('host.orgs', projects => 'host.projects', project_deleted => 'deleted_at')");
        let (id, _) = upsert("wf-1", "project", "o1", Some("p1"));
        let seen = || -> i64 {
            one(&format!(
                "SELECT count(*) FROM apollo_jobs.job_by_id('{id}', 'o1', 'p1')"
            ))
        };
        assert_eq!(seen(), 1);
        run("UPDATE host.projects SET deleted = true WHERE nano_id = 'p1'");
        assert_eq!(
            seen(),
            1,
            "deleted is no longer the project's soft-delete column"
        );
        run("UPDATE host.projects SET deleted_at = now() WHERE nano_id = 'p1'");
        assert_eq!(seen(), 0);
        run("UPDATE host.projects SET deleted_at = NULL WHERE nano_id = 'p1'");
        run("ALTER TABLE host.orgs ALTER COLUMN deleted DROP NOT NULL");
        run("UPDATE host.orgs SET deleted = NULL WHERE nano_id = 'o1'");
        assert_eq!(
            seen(),
            0,
            "a null boolean soft-delete column hides (fail closed)"
        );
        for (args, code) in [
            (
                "'host.orgs', projects => 'host.projects', project_deleted => 'note'",
                "42804",
            ),
            ("'host.projects', org_key => 'ref'", "42804"),
            ("'host.orgs', org_deleted => 'gone'", "42703"),
            ("'host.orgs', org_key => NULL", "22004"),
            ("999999999::oid::regclass", "42P01"),
        ] {
            assert_eq!(
                sqlstate(&format!("SELECT apollo_jobs.bind_scopes({args})")),
                code,
                "{args}"
            );
        }
    }

    /// Host DDL that breaks a binding is reported by every read as 55000
    /// naming the fix; a rebind repairs it; renames need nothing.
    #[pg_test]
    fn broken_bindings_say_so_and_rebinding_fixes_them() {
        host();
        let (id, _) = upsert("wf-1", "project", "o1", Some("p1"));
        let getter = format!("SELECT count(*) FROM apollo_jobs.job_by_id('{id}', 'o1', 'p1')");
        let lister = "SELECT count(*) FROM apollo_jobs.list_jobs('o1', 'p1')";
        run("ALTER TABLE host.projects RENAME TO projects_renamed");
        assert_eq!(
            one::<i64>(&getter),
            1,
            "a renamed host table keeps its binding"
        );
        run("ALTER TABLE host.projects_renamed DROP COLUMN deleted");
        for read in [getter.as_str(), lister] {
            assert_eq!(sqlstate(read), "55000", "{read}");
            let text = error_text(read);
            assert!(
                text.contains("bind_scopes") && !text.contains("has not been created"),
                "{text}"
            );
        }
        run("SELECT apollo_jobs.bind_scopes('host.orgs', projects => 'host.projects_renamed', project_deleted => NULL)");
        assert_eq!(one::<i64>(&getter), 1);
        assert_eq!(one::<i64>(lister), 1);
        run("DROP TABLE host.projects_renamed CASCADE");
        assert_eq!(sqlstate(&getter), "55000");
        assert!(error_text(&getter).contains("no longer exists"));
    }

    /// A renamed host schema: the kept statements are rebuilt with the bound
    /// table's new name, so a new table under the old name is never read.
    #[pg_test]
    fn a_renamed_host_schema_keeps_the_binding() {
        host();
        let (id, _) = upsert("wf-1", "org", "o1", None);
        let seen = || -> i64 {
            one(&format!(
                "SELECT count(*) FROM apollo_jobs.job_by_id('{id}', 'o1')"
            ))
        };
        let listed = || -> i64 { one("SELECT count(*) FROM apollo_jobs.list_jobs('o1')") };
        assert_eq!((seen(), listed()), (1, 1));
        run("ALTER SCHEMA host RENAME TO legacy");
        assert_eq!((seen(), listed()), (1, 1));
        run("UPDATE legacy.orgs SET deleted = true WHERE nano_id = 'o1'");
        assert_eq!((seen(), listed()), (0, 0));
        host_tables_in("host");
        run("INSERT INTO host.orgs VALUES ('o1')");
        assert_eq!(
            (seen(), listed()),
            (0, 0),
            "a look-alike table under the old name was read"
        );
    }

    /// Host row-level security that hides a scope hides its jobs: the filter
    /// fails closed.
    #[pg_test]
    fn the_getter_fails_closed_under_host_row_level_security() {
        host();
        let (org_job, _) = upsert("wf-1", "org", "o1", None);
        let (project_job, _) = upsert("wf-2", "project", "o1", Some("p1"));
        run("UPDATE host.orgs SET deleted = true WHERE nano_id = 'o1'");
        run("CREATE ROLE apollo_jobs_host_rls");
        run("GRANT USAGE ON SCHEMA apollo_jobs, host TO apollo_jobs_host_rls");
        run("GRANT SELECT ON apollo_jobs.jobs, host.orgs, host.projects TO apollo_jobs_host_rls");
        run("ALTER TABLE host.orgs ENABLE ROW LEVEL SECURITY");
        run("CREATE POLICY live_only ON host.orgs USING (NOT deleted)");
        run("SET LOCAL ROLE apollo_jobs_host_rls");
        for (id, project) in [(&org_job, "NULL"), (&project_job, "'p1'")] {
            let n: i64 = one(&format!(
                "SELECT count(*) FROM apollo_jobs.job_by_id('{id}', 'o1', {project})"
            ));
            assert_eq!(n, 0, "{id}");
        }
        let listed: i64 =
            one("SELECT count(*) FROM apollo_jobs.list_jobs('o1', include_project_jobs => true)");
        assert_eq!(listed, 0);
        run("RESET ROLE");
    }

    /// list_jobs: scope rules, order, filters, cursors and every error.
    #[pg_test]
    fn list_jobs_pages_a_scope_newest_first() {
        host();
        run("INSERT INTO host.projects VALUES ('p3', 'o1')");
        for i in 0..12 {
            let (class, project) = match i % 3 {
                0 => ("org", None),
                1 => ("project", Some("p1")),
                _ => ("project", Some("p3")),
            };
            upsert(&format!("wf-{i:02}"), class, "o1", project);
        }
        upsert("wf-other", "org", "o2", None);
        // Spread creation times (with the trigger off), two rows per instant.
        run("ALTER TABLE apollo_jobs.jobs DISABLE TRIGGER jobs_immutable");
        run("UPDATE apollo_jobs.jobs SET created_at = '2026-01-01'::timestamptz + (substr(thermos_job_id, 4)::int / 2) * interval '1 minute' WHERE org_id = 'o1'");
        run("ALTER TABLE apollo_jobs.jobs ENABLE TRIGGER jobs_immutable");
        let expected = |filter: &str| -> Vec<String> {
            Spi::connect(|c| {
                c.select(&format!("SELECT job_id FROM apollo_jobs.jobs WHERE org_id = 'o1' AND {filter} ORDER BY created_at DESC, job_id DESC"), None, &[])
                    .expect("expected")
                    .map(|r| r.get::<String>(1).expect("id").expect("id"))
                    .collect()
            })
        };
        let page = |args: &str| -> Vec<String> {
            Spi::connect(|c| {
                c.select(
                    &format!("SELECT job_id::text FROM apollo_jobs.list_jobs({args})"),
                    None,
                    &[],
                )
                .expect("page")
                .map(|r| r.get::<String>(1).expect("id").expect("id"))
                .collect()
            })
        };
        for (scope, filter) in [
            ("'o1'", "project_id IS NULL"),
            ("'o1', 'p1'", "project_id = 'p1'"),
            ("'o1', include_project_jobs => true", "true"),
        ] {
            let want = expected(filter);
            assert_eq!(page(&format!("{scope}, page_size => 100")), want, "{scope}");
            // Pages of 3 through the scope: every job exactly once, in order.
            let mut got = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let args = match &cursor {
                    None => format!("{scope}, page_size => 3"),
                    Some(c) => format!("{scope}, starting_after => '{c}', page_size => 3"),
                };
                let rows = page(&args);
                if rows.is_empty() {
                    break;
                }
                cursor = rows.last().cloned();
                got.extend(rows);
            }
            assert_eq!(got, want, "{scope} paged");
        }
        // A job_type filter: its own statements, the same order and paging.
        run("SELECT apollo_jobs.upsert_job_by_thermos_id('wf-x' || i, 'project', 'o1', 'p1', 'batch_export') FROM generate_series(1, 5) i");
        run("ALTER TABLE apollo_jobs.jobs DISABLE TRIGGER jobs_immutable");
        run("UPDATE apollo_jobs.jobs SET created_at = '2026-01-01'::timestamptz + substr(thermos_job_id, 5)::int * interval '50 seconds' WHERE job_type = 'batch_export'");
        run("ALTER TABLE apollo_jobs.jobs ENABLE TRIGGER jobs_immutable");
        for (scope, filter) in [
            ("'o1', 'p1'", "project_id = 'p1'"),
            ("'o1', include_project_jobs => true", "true"),
        ] {
            let want = expected(&format!("{filter} AND job_type = 'batch_export'"));
            assert_eq!(want.len(), 5);
            let typed = format!("{scope}, job_type => 'batch_export'");
            assert_eq!(page(&format!("{typed}, page_size => 100")), want, "{typed}");
            let mut got = page(&format!("{typed}, page_size => 2"));
            while let Some(last) = got.last().cloned() {
                let next = page(&format!(
                    "{typed}, starting_after => '{last}', page_size => 2"
                ));
                if next.is_empty() {
                    break;
                }
                got.extend(next);
            }
            assert_eq!(got, want, "{typed} paged");
            // Untyped, the scope's every job, both types interleaved.
            assert_eq!(
                page(&format!("{scope}, page_size => 100")),
                expected(filter)
            );
        }
        run("DELETE FROM apollo_jobs.jobs WHERE job_type = 'batch_export'");
        // The job_type filter need not match the cursor's job.
        let first = expected("true")[0].clone();
        assert_eq!(
            page(&format!("'o1', include_project_jobs => true, job_type => 'other', starting_after => '{first}'")),
            Vec::<String>::new()
        );
        // A project of another org lists nothing; a soft-deleted project lists nothing.
        assert!(page("'o2', 'p1'").is_empty());
        run("UPDATE host.projects SET deleted = true WHERE nano_id = 'p3'");
        assert!(page("'o1', 'p3'").is_empty());
        assert_eq!(
            page("'o1', include_project_jobs => true, page_size => 100").len(),
            8
        );
        // Errors.
        let foreign: String = one("SELECT job_id FROM apollo_jobs.jobs WHERE org_id = 'o2'");
        let org_first = expected("project_id IS NULL")[0].clone();
        let p3_job: String =
            one("SELECT job_id FROM apollo_jobs.jobs WHERE project_id = 'p3' LIMIT 1");
        let cursor_message =
            error_text("SELECT * FROM apollo_jobs.list_jobs('o1', starting_after => 'bogus')");
        for (args, code) in [
            ("NULL", "22004"),
            ("'o1', include_project_jobs => NULL", "22004"),
            ("'o1', page_size => NULL", "22004"),
            ("'o1', page_size => 0", "22023"),
            ("'o1', page_size => 1001", "22023"),
            ("'o1', 'p1', include_project_jobs => true", "22023"),
            ("'o1', job_type => 'Bad Type'", "22023"),
            ("'o1', starting_after => 'bogus'", "22023"),
            (
                "'o1', starting_after => 'oj_000000000000000000000'",
                "22023",
            ),
            (&format!("'o1', starting_after => '{foreign}'"), "22023"),
            (
                &format!("'o1', 'p3', starting_after => '{p3_job}'"),
                "22023",
            ),
            (
                &format!("'o1', 'p1', starting_after => '{org_first}'"),
                "22023",
            ),
        ] {
            let call = format!("SELECT * FROM apollo_jobs.list_jobs({args})");
            assert_eq!(sqlstate(&call), code, "{call}");
            if args.contains("starting_after") {
                assert_eq!(
                    error_text(&call),
                    cursor_message,
                    "the cursor error differs: {call}"
                );
            }
        }
        assert_eq!(page("'o1', page_size => 1000").len(), 4);
    }

    /// Plans of the listing statements made in this backend (test builds
    /// only): `with/without` the listing's planner settings.
    #[pg_extern]
    fn listing_plans() -> String {
        use crate::spiplan::counters::{PLANNED_WITH, PLANNED_WITHOUT};
        format!(
            "{}/{}",
            PLANNED_WITH.with(std::cell::Cell::get),
            PLANNED_WITHOUT.with(std::cell::Cell::get)
        )
    }

    /// list_jobs plans its statements with enable_sort/enable_seqscan off,
    /// only when the plan cache has to plan them, and leaves the caller's
    /// settings alone; a scope row checked once per page (the LIMIT's gate)
    /// hides every row when it is soft-deleted.
    #[pg_test]
    fn list_jobs_plans_with_its_settings_only() {
        host();
        for i in 0..4 {
            upsert(&format!("wf-s{i}"), "project", "o1", Some("p1"));
        }
        run("SET LOCAL enable_sort = on");
        run("SET LOCAL enable_seqscan = on");
        let plans = || -> (i64, i64) {
            let text: String = one("SELECT tests.listing_plans()");
            let (with, without) = text.split_once('/').expect("with/without");
            (
                with.parse().expect("with"),
                without.parse().expect("without"),
            )
        };
        let count = |args: &str| -> i64 {
            one(&format!(
                "SELECT count(*) FROM apollo_jobs.list_jobs({args})"
            ))
        };
        let (with0, without0) = plans();
        assert_eq!(count("'o1', 'p1'"), 4);
        let (with1, _) = plans();
        assert!(with1 > with0, "the first page is planned with the settings");
        assert_eq!(count("'o1', 'p1'"), 4);
        assert_eq!(plans().0, with1, "a kept plan is not planned again");
        let setting = |name: &str| -> String { one(&format!("SELECT current_setting('{name}')")) };
        assert_eq!(setting("enable_sort"), "on");
        assert_eq!(setting("enable_seqscan"), "on");
        // An invalidation (new statistics) makes the next call plan again,
        // with the settings.
        run("ANALYZE apollo_jobs.jobs");
        assert_eq!(count("'o1', 'p1'"), 4);
        let (with2, without2) = plans();
        assert!(with2 > with1, "re-planned after ANALYZE");
        assert_eq!(without2, without0, "never planned without the settings");
        assert_eq!(setting("enable_sort"), "on");
        // The gate: a soft-deleted org or project hides every row of the
        // page, and makes a cursor of it no cursor of this listing.
        let first: String =
            one("SELECT job_id::text FROM apollo_jobs.list_jobs('o1', 'p1', page_size => 1)");
        run("UPDATE host.projects SET deleted = true WHERE nano_id = 'p1'");
        assert_eq!(count("'o1', 'p1'"), 0);
        assert_eq!(count("'o1', include_project_jobs => true"), 0);
        assert_eq!(
            sqlstate(&format!(
                "SELECT * FROM apollo_jobs.list_jobs('o1', 'p1', starting_after => '{first}')"
            )),
            "22023"
        );
        run("UPDATE host.projects SET deleted = false WHERE nano_id = 'p1'");
        assert_eq!(count("'o1', 'p1'"), 4);
        run("UPDATE host.orgs SET deleted = true WHERE nano_id = 'o1'");
        assert_eq!(count("'o1', 'p1'"), 0);
        assert_eq!(count("'o1', include_project_jobs => true"), 0);
        assert_eq!(
            sqlstate(&format!(
                "SELECT * FROM apollo_jobs.list_jobs('o1', 'p1', starting_after => '{first}')"
            )),
            "22023"
        );
    }

    /// An error raised inside a call that plans the listing with its
    /// settings (here by a host row-level security policy), caught by a
    /// subtransaction, leaves the caller's settings as they were.
    #[pg_test]
    fn list_jobs_error_while_planning_restores_settings() {
        host();
        upsert("wf-e", "project", "o1", Some("p1"));
        run("CREATE FUNCTION host.refuse() RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN IF current_setting('apollo_jobs_test.refuse', true) = 'on' THEN RAISE EXCEPTION 'refused'; END IF; RETURN true; END $$");
        run("ALTER TABLE host.orgs ENABLE ROW LEVEL SECURITY");
        run("CREATE POLICY refuse ON host.orgs USING (host.refuse())");
        run("CREATE ROLE apollo_jobs_refused");
        run("GRANT USAGE ON SCHEMA apollo_jobs, host, tests TO apollo_jobs_refused");
        run("GRANT SELECT ON apollo_jobs.jobs, host.orgs, host.projects TO apollo_jobs_refused");
        run("SET LOCAL enable_sort = on");
        run("SET LOCAL enable_seqscan = on");
        run("SET LOCAL apollo_jobs_test.refuse = on");
        run("SET LOCAL ROLE apollo_jobs_refused");
        let planned = || -> i64 {
            let text: String = one("SELECT tests.listing_plans()");
            text.split_once('/')
                .and_then(|(with, _)| with.parse().ok())
                .expect("with/without")
        };
        let setting = |name: &str| -> String { one(&format!("SELECT current_setting('{name}')")) };
        let before = planned();
        assert_eq!(
            sqlstate("SELECT * FROM apollo_jobs.list_jobs('o1', 'p1')"),
            "P0001"
        );
        assert!(
            planned() > before,
            "the error came from a run with the settings"
        );
        assert_eq!(setting("enable_sort"), "on");
        assert_eq!(setting("enable_seqscan"), "on");
        run("SET LOCAL apollo_jobs_test.refuse = off");
        let listed: i64 = one("SELECT count(*) FROM apollo_jobs.list_jobs('o1', 'p1')");
        assert_eq!(listed, 1);
        assert_eq!(setting("enable_sort"), "on");
        run("RESET ROLE");
    }
}
