//! diesel table definitions, written in types both backends share.

diesel::table! {
    jobs (seq) {
        seq -> BigInt,
        id -> Text,
        scenario -> Text,
        confidence -> Text,
        engine -> Text,
        queue -> Text,
        priority -> Text,
        parameters -> Text,
        status -> Text,
        progress -> Double,
        node_id -> Nullable<Text>,
        attempt -> Integer,
        retry_count -> Integer,
        max_retries -> Integer,
        created_at -> BigInt,
        queued_at -> BigInt,
        started_at -> Nullable<BigInt>,
        last_activity_at -> Nullable<BigInt>,
        completed_at -> Nullable<BigInt>,
        retry_at -> Nullable<BigInt>,
        error -> Nullable<Text>,
        failure_reason -> Nullable<Text>,
        logs -> Nullable<Text>,
        metrics -> Nullable<Text>,
        qoe_score -> Nullable<Double>,
        efficiency_score -> Nullable<Double>,
        energy_joules -> Nullable<Double>,
        vmaf_score -> Nullable<Double>,
        idempotency_key -> Nullable<Text>,
        updated_at -> BigInt,
        retry_base -> Integer,
        idempotency_fingerprint -> Nullable<Text>,
    }
}

diesel::table! {
    job_events (id) {
        id -> BigInt,
        job_id -> Text,
        from_state -> Nullable<Text>,
        to_state -> Text,
        reason -> Text,
        attempt -> Integer,
        node_id -> Nullable<Text>,
        at -> BigInt,
    }
}

diesel::table! {
    nodes (id) {
        id -> Text,
        name -> Text,
        address -> Text,
        node_type -> Text,
        cpu_threads -> Integer,
        cpu_model -> Text,
        cpu_load_percent -> Double,
        has_gpu -> Bool,
        gpu_type -> Text,
        gpu_capabilities -> Text,
        ram_total_bytes -> BigInt,
        ram_free_bytes -> BigInt,
        labels -> Text,
        status -> Text,
        draining -> Bool,
        max_concurrent_jobs -> Integer,
        hardware -> Text,
        last_heartbeat -> BigInt,
        registered_at -> BigInt,
        token_hash -> Nullable<Text>,
        heartbeat_interval_ms -> Nullable<Integer>,
    }
}

diesel::table! {
    state_totals (state) {
        state -> Text,
        total -> BigInt,
    }
}

diesel::table! {
    job_outputs (job_id, name) {
        job_id -> Text,
        name -> Text,
        attempt -> Integer,
        bytes -> BigInt,
        sha256 -> Text,
        content_type -> Text,
        location -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    job_inputs (job_id) {
        job_id -> Text,
        info -> Text,
        probed_at -> BigInt,
    }
}

diesel::table! {
    job_graph (job_id) {
        job_id -> Text,
        parent_id -> Nullable<Text>,
        after_ids -> Text,
        is_parent -> Bool,
        stage -> Text,
        label -> Text,
        weight -> Double,
    }
}

diesel::table! {
    templates (name, version) {
        name -> Text,
        version -> Integer,
        description -> Text,
        body -> Text,
        created_at -> BigInt,
        deleted -> Bool,
    }
}

diesel::table! {
    events (id) {
        id -> BigInt,
        kind -> Text,
        job_id -> Nullable<Text>,
        parent_id -> Nullable<Text>,
        node_id -> Nullable<Text>,
        at -> BigInt,
        payload -> Text,
    }
}

diesel::table! {
    webhooks (id) {
        id -> Text,
        url -> Text,
        kinds -> Text,
        job_ids -> Text,
        parent_ids -> Text,
        secret -> Text,
        description -> Text,
        owner_job -> Nullable<Text>,
        start_after -> BigInt,
        created_at -> BigInt,
        disabled_at -> Nullable<BigInt>,
        disabled_reason -> Nullable<Text>,
        dropped -> BigInt,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> BigInt,
        webhook_id -> Text,
        event_id -> BigInt,
        ordering_key -> Text,
        state -> Text,
        attempts -> Integer,
        next_attempt_at -> BigInt,
        last_status -> Nullable<Integer>,
        last_error -> Nullable<Text>,
        created_at -> BigInt,
        delivered_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    webhook_cursor (id) {
        id -> Integer,
        last_event_id -> BigInt,
    }
}

diesel::table! {
    leader_lease (id) {
        id -> Integer,
        epoch -> BigInt,
        leader_url -> Text,
        acquired_at -> BigInt,
    }
}

diesel::table! {
    console_sessions (id) {
        id -> Text,
        role -> Text,
        key_digest -> Text,
        csrf_token -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    uploads (id) {
        id -> Text,
        name -> Text,
        bytes -> BigInt,
        sha256 -> Text,
        content_type -> Text,
        location -> Text,
        created_at -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(jobs, job_graph);
diesel::joinable!(webhook_deliveries -> events (event_id));
diesel::allow_tables_to_appear_in_same_query!(webhook_deliveries, events);
