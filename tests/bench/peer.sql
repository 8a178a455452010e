-- The peer: what a team writes without the extension, in PL/pgSQL, with the
-- same semantics as apollo_jobs.upsert_job_by_thermos_id and mint_job_id.
-- Lives in its own schema so it cannot be confused with the extension.
--
-- Written the way a performance-aware team would: names schema-qualified
-- instead of a per-function SET search_path (which would cost a GUC
-- save/restore per call), the argument checks folded into one expression on
-- the common (valid) path, OUT parameters + RETURN NEXT instead of RETURN
-- QUERY.
CREATE SCHEMA bench_peer;
CREATE EXTENSION pgcrypto SCHEMA bench_peer;

-- nanoid over pgcrypto's gen_random_bytes: the same mask-and-reject loop as
-- the nanoid crate (alphabet of 62 symbols, mask 63, 35 bytes per draw, no
-- modulo bias), with the oj_/pj_ prefix of the job class.
CREATE FUNCTION bench_peer.nanoid(job_class text) RETURNS text
    LANGUAGE plpgsql VOLATILE PARALLEL SAFE AS $$
DECLARE
    alphabet constant text := '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
    id text;
    bytes bytea;
    symbol int;
    n int := 0;
BEGIN
    id := CASE job_class WHEN 'org' THEN 'oj_' WHEN 'project' THEN 'pj_' END;
    IF id IS NULL THEN
        IF job_class IS NULL THEN
            RAISE EXCEPTION 'argument "job_class" must not be null' USING ERRCODE = '22004';
        END IF;
        RAISE EXCEPTION 'invalid job_class: "%"', job_class USING ERRCODE = '22023';
    END IF;
    LOOP
        bytes := bench_peer.gen_random_bytes(35);
        FOR k IN 0 .. 34 LOOP
            symbol := pg_catalog.get_byte(bytes, k) & 63;
            IF symbol < 62 THEN
                id := id || pg_catalog.substr(alphabet, symbol + 1, 1);
                n := n + 1;
                IF n = 21 THEN
                    RETURN id;
                END IF;
            END IF;
        END LOOP;
    END LOOP;
END
$$;

-- Lookup-first get-or-create on the thermos id: (existing id, false) when the
-- registration matches, 23505 when it differs, (new id, true) after an
-- INSERT ... ON CONFLICT DO NOTHING that wins, a re-read after one that loses,
-- 40001 after three lost races.
CREATE FUNCTION bench_peer.upsert_job_by_thermos_id(
    thermos_job_id text,
    job_class text,
    org_id text,
    project_id text,
    job_type text
) RETURNS TABLE (job_id apollo_jobs.job_id, created boolean)
    LANGUAGE plpgsql VOLATILE ROWS 1 AS $$
#variable_conflict use_column
DECLARE
    found_row record;
    new_id text;
BEGIN
    -- Argument rules of the extension (same SQLSTATEs): one test on the valid path.
    -- job_type: '^[a-z][a-z0-9_]*$' plus a length test is the same rule as
    -- '^[a-z][a-z0-9_]{0,62}$' at a tenth of the cost (the bounded repeat
    -- makes the regex engine do ~4 us of work per match).
    IF (pg_catalog.octet_length(upsert_job_by_thermos_id.thermos_job_id) BETWEEN 1 AND 1000
            AND upsert_job_by_thermos_id.job_class IN ('org', 'project')
            AND pg_catalog.octet_length(upsert_job_by_thermos_id.org_id) BETWEEN 1 AND 255
            AND CASE upsert_job_by_thermos_id.job_class
                    WHEN 'org' THEN upsert_job_by_thermos_id.project_id IS NULL
                    ELSE pg_catalog.octet_length(upsert_job_by_thermos_id.project_id) BETWEEN 1 AND 255
                END
            AND pg_catalog.octet_length(upsert_job_by_thermos_id.job_type) <= 63
            AND upsert_job_by_thermos_id.job_type COLLATE "C" ~ '^[a-z][a-z0-9_]*$')
       IS NOT TRUE THEN
        IF upsert_job_by_thermos_id.thermos_job_id IS NULL THEN
            RAISE EXCEPTION 'argument "thermos_job_id" must not be null' USING ERRCODE = '22004';
        ELSIF upsert_job_by_thermos_id.job_class IS NULL THEN
            RAISE EXCEPTION 'argument "job_class" must not be null' USING ERRCODE = '22004';
        ELSIF upsert_job_by_thermos_id.org_id IS NULL THEN
            RAISE EXCEPTION 'argument "org_id" must not be null' USING ERRCODE = '22004';
        ELSIF upsert_job_by_thermos_id.job_type IS NULL THEN
            RAISE EXCEPTION 'argument "job_type" must not be null' USING ERRCODE = '22004';
        END IF;
        RAISE EXCEPTION 'invalid arguments for a job registration' USING ERRCODE = '22023';
    END IF;

    FOR attempt IN 1 .. 3 LOOP
        SELECT j.job_id, j.job_class, j.org_id, j.project_id, j.job_type
          INTO found_row
          FROM apollo_jobs.jobs j
         WHERE j.thermos_job_id = upsert_job_by_thermos_id.thermos_job_id;
        IF FOUND THEN
            IF found_row.job_class = upsert_job_by_thermos_id.job_class
               AND found_row.org_id = upsert_job_by_thermos_id.org_id
               AND found_row.project_id IS NOT DISTINCT FROM upsert_job_by_thermos_id.project_id
               AND found_row.job_type = upsert_job_by_thermos_id.job_type THEN
                job_id := found_row.job_id;
                created := false;
                RETURN NEXT;
                RETURN;
            END IF;
            RAISE EXCEPTION 'thermos_job_id is already registered for a different job'
                USING ERRCODE = '23505';
        END IF;

        new_id := bench_peer.nanoid(upsert_job_by_thermos_id.job_class);
        INSERT INTO apollo_jobs.jobs AS j
               (job_id, job_class, org_id, project_id, job_type, thermos_job_id)
        VALUES (new_id, upsert_job_by_thermos_id.job_class, upsert_job_by_thermos_id.org_id,
                upsert_job_by_thermos_id.project_id, upsert_job_by_thermos_id.job_type,
                upsert_job_by_thermos_id.thermos_job_id)
        ON CONFLICT (thermos_job_id) DO NOTHING
        RETURNING j.job_id INTO job_id;
        IF FOUND THEN
            created := true;
            RETURN NEXT;
            RETURN;
        END IF;
        -- Lost the race to a transaction that committed first: re-read.
    END LOOP;
    RAISE EXCEPTION 'could not serialize access due to a concurrent registration of the same thermos_job_id'
        USING ERRCODE = '40001';
END
$$;
