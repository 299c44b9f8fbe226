-- Herd's schema on PostgreSQL: the same tables as the SQLite store's,
-- with jsonb twin sections and text in byte order (COLLATE "C"), as the
-- query language compares strings. Times are text in Azure's layout
-- (2006-01-02T15:04:05.0000000Z; never set = 0001-01-01T00:00:00Z), which
-- sorts in time order and compares as queries expect.

CREATE TABLE policies (
    name          text COLLATE "C" PRIMARY KEY,
    primary_key   text NOT NULL,
    secondary_key text NOT NULL,
    rights        integer NOT NULL
);

CREATE TABLE settings (
    name  text COLLATE "C" PRIMARY KEY,
    value text NOT NULL
);

-- One row per device identity and its twin, so that a twin query reads one
-- table. The twin sections hold no $version and $metadata members: those
-- live in the columns beside them.
CREATE TABLE devices (
    device_id                     text COLLATE "C" PRIMARY KEY,
    generation_id                 text COLLATE "C" NOT NULL,
    etag                          bigint NOT NULL,
    status                        text COLLATE "C" NOT NULL,
    status_reason                 text COLLATE "C",
    status_updated_time           text COLLATE "C" NOT NULL,
    auth_type                     text COLLATE "C" NOT NULL,
    primary_key                   text NOT NULL,
    secondary_key                 text NOT NULL,
    primary_thumbprint            text COLLATE "C",
    secondary_thumbprint          text COLLATE "C",
    iot_edge                      boolean NOT NULL,
    device_scope                  text COLLATE "C" NOT NULL,
    parent_scopes                 jsonb NOT NULL,
    connection_state              text COLLATE "C" NOT NULL,
    connection_state_updated_time text COLLATE "C" NOT NULL,
    last_activity_time            text COLLATE "C" NOT NULL,
    c2d_message_count             bigint NOT NULL,
    twin_etag                     bigint NOT NULL,
    twin_version                  bigint NOT NULL,
    tags                          jsonb NOT NULL,
    desired                       jsonb NOT NULL,
    desired_version               bigint NOT NULL,
    desired_metadata              jsonb NOT NULL,
    reported                      jsonb NOT NULL,
    reported_version              bigint NOT NULL,
    reported_metadata             jsonb NOT NULL
);
-- Containment (tags @> '{"building":43}') is how the query compiler
-- writes equality on tags; jsonb_path_ops serves exactly that.
CREATE INDEX devices_tags ON devices USING gin (tags jsonb_path_ops);

-- Persistent MQTT sessions (§8.3); subscriptions is internal/bus.Feature.
CREATE TABLE device_sessions (
    device_id     text COLLATE "C" PRIMARY KEY REFERENCES devices (device_id) ON DELETE CASCADE,
    subscriptions integer NOT NULL
);

-- Jobs v2. The statistics change in the same transactions as the
-- device_jobs rows, so that device_count = succeeded_count + failed_count
-- + running_count + pending_count at every commit.
CREATE TABLE jobs (
    job_id                text COLLATE "C" PRIMARY KEY,
    type                  text COLLATE "C" NOT NULL,
    status                text COLLATE "C" NOT NULL,
    query_condition       text NOT NULL,
    created_time          text COLLATE "C" NOT NULL,
    start_time            text COLLATE "C" NOT NULL,
    end_time              text COLLATE "C",
    started_time          text COLLATE "C",
    max_execution_seconds bigint NOT NULL,
    request               text NOT NULL,
    failure_reason        text,
    status_message        text,
    device_count          bigint NOT NULL DEFAULT 0,
    succeeded_count       bigint NOT NULL DEFAULT 0,
    failed_count          bigint NOT NULL DEFAULT 0,
    running_count         bigint NOT NULL DEFAULT 0,
    pending_count         bigint NOT NULL DEFAULT 0
);
CREATE INDEX jobs_status_start ON jobs (status, start_time);
CREATE INDEX jobs_created ON jobs (created_time, job_id);
CREATE INDEX jobs_end ON jobs (end_time) WHERE end_time IS NOT NULL;

-- One row per device a job targets (the devices.jobs query source).
-- outcome is {"deviceMethodResponse":…} of a method job, or NULL: text,
-- so that the device's payload comes back as the bytes it sent (queries
-- on devices.jobs.outcome read it as jsonb).
CREATE TABLE device_jobs (
    job_id            text COLLATE "C" NOT NULL,
    device_id         text COLLATE "C" NOT NULL,
    job_type          text COLLATE "C" NOT NULL,
    status            text COLLATE "C" NOT NULL,
    start_time        text COLLATE "C" NOT NULL,
    end_time          text COLLATE "C" NOT NULL,
    created_time      text COLLATE "C" NOT NULL,
    last_updated_time text COLLATE "C" NOT NULL,
    outcome           text,
    error_code        text COLLATE "C",
    error_description text COLLATE "C",
    PRIMARY KEY (job_id, device_id)
);

-- The etag encodings the REST API shows (twin.ETagString: base64 of the
-- counter as 8 big-endian bytes; registry.ETagString: base64 of its
-- decimal text), for queries on etag and deviceEtag.
CREATE FUNCTION herd_twin_etag(bigint) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT encode(int8send($1), 'base64') $$;
CREATE FUNCTION herd_device_etag(bigint) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT encode(convert_to($1::text, 'UTF8'), 'base64') $$;

-- herd_merge applies a JSON merge patch (RFC 7396, as SQLite's
-- jsonb_patch): null deletes a key, an object merges into an object, any
-- other value replaces. Twin-update jobs merge with it set-based.
CREATE FUNCTION herd_merge(target jsonb, patch jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    k text;
    v jsonb;
    out jsonb;
BEGIN
    IF jsonb_typeof(patch) IS DISTINCT FROM 'object' THEN
        RETURN patch;
    END IF;
    IF jsonb_typeof(target) IS DISTINCT FROM 'object' THEN
        out := '{}'::jsonb;
    ELSE
        out := target;
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(patch) LOOP
        IF v = 'null'::jsonb THEN
            out := out - k;
        ELSIF jsonb_typeof(v) = 'object' THEN
            out := jsonb_set(out, ARRAY[k], herd_merge(out -> k, v), true);
        ELSE
            out := jsonb_set(out, ARRAY[k], v, true);
        END IF;
    END LOOP;
    RETURN out;
END
$$;
