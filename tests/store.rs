//! The store on both backends: a real SQLite file, and a real PostgreSQL when
//! `AZB_TEST_PG_URL` names one (CI starts one with `scripts/pg-test-cluster.sh`).

mod support;

use std::collections::HashSet;

use ami_zoho_bridge::calls::Call;
use ami_zoho_bridge::config::CallsConfig;
use ami_zoho_bridge::store::{Delivered, NewActivity, OutboxState, Search, Store};
use serde_json::json;

fn calls() -> Vec<Call> {
    let bytes = support::read_capture(&support::root().join("fixtures/ami-sip/mixed-small.ami"));
    let cfg = CallsConfig {
        trunk_contexts: vec!["from-trunk".into()],
        trunk_channels: vec!["SIP/carrier".into()],
        agent_contexts: vec!["from-agents".into(), "agents-transfer".into()],
        ..CallsConfig::default()
    };
    support::finished_calls(&bytes, cfg)
}

fn activity(call: &Call) -> NewActivity {
    NewActivity {
        unique_key: format!("lab/{}/every call/Calls", call.linkedid),
        trigger: "every call".into(),
        module: "Calls".into(),
        configuration: "default".into(),
        account: "main".into(),
        payload: json!({ "Subject": format!("call {}", call.linkedid) })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        workflows: None,
        agent_email: call.agent_email.clone(),
        remote_number: call.caller.clone(),
        unrendered: None,
    }
}

async fn exercise(store: Store) {
    let calls = calls();
    assert_eq!(calls.len(), 5, "mixed-small has five calls (truth file)");
    for c in &calls {
        let added = store
            .record_call("lab", c, Some("+390612345678"), &[activity(c)], 1)
            .await
            .expect("record");
        assert_eq!(added, 1);
    }
    // Seen again (restart, second bridge): nothing new.
    for c in &calls {
        let added = store
            .record_call("lab", c, None, &[activity(c)], 1)
            .await
            .expect("record again");
        assert_eq!(added, 0);
    }
    assert_eq!(store.interaction_count().await.expect("count"), 5);

    // Four workers lease concurrently: every row goes to exactly one of them.
    let mut tasks = Vec::new();
    for w in 0..4 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let rows = s
                    .lease(&format!("w{w}"), 2, 60_000_000)
                    .await
                    .expect("lease");
                if rows.is_empty() {
                    return got;
                }
                got.extend(rows.into_iter().map(|r| (r.id, format!("w{w}"), r)));
            }
        }));
    }
    let mut leased = Vec::new();
    for t in tasks {
        leased.extend(t.await.expect("join"));
    }
    let ids: HashSet<i64> = leased.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(leased.len(), 5, "no row leased twice");
    assert_eq!(ids.len(), 5);

    // Fencing: only the holder settles a row.
    let (_, owner, row) = &leased[0];
    let d = Delivered {
        zoho_id: "5725767000000900001".into(),
        owner_id: Some("5725767000000411002".into()),
        user_email: Some("Agent1001@Example.com".into()),
        contact_id: Some("5725767000000512001".into()),
        lead_id: None,
    };
    assert!(!store
        .delivered(row, "someone-else", &d)
        .await
        .expect("fenced"));
    assert!(store.delivered(row, owner, &d).await.expect("delivered"));

    // A lease that runs out: the next holder is told the outcome is unknown.
    let (_, owner1, row1) = &leased[1];
    assert!(store
        .retry_later(row1, owner1, 0, "HTTP 500", false)
        .await
        .expect("retry"));
    let again = store.lease("x", 10, 1).await.expect("lease");
    assert!(again.iter().any(|r| r.id == row1.id && !r.unknown_outcome));
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let third = store
        .lease("y", 10, 60_000_000)
        .await
        .expect("lease after expiry");
    let r = third
        .iter()
        .find(|r| r.id == row1.id)
        .expect("expired lease is taken over");
    assert!(
        r.unknown_outcome,
        "an expired lease means the outcome is unknown"
    );
    assert!(store
        .fail(r, "y", "Zoho 400 INVALID_DATA (field Call_Purpose)")
        .await
        .expect("fail"));
    let failed = store
        .outbox_list(Some(OutboxState::Failed), 10)
        .await
        .expect("list");
    assert_eq!(failed.len(), 1);
    assert!(failed[0]
        .last_error
        .as_deref()
        .unwrap_or("")
        .contains("Call_Purpose"));
    assert_eq!(store.outbox_retry(None).await.expect("retry failed"), 1);

    // Search: the delivered call by contact phone and by user e-mail (any case).
    let by_contact = Search {
        contact_phone_e164: Some("+390612345678".into()),
        page: 1,
        per_page: 50,
        ..Search::default()
    };
    let (hits, total) = store.search(&by_contact).await.expect("search");
    assert_eq!((hits.len(), total), (1, 1));
    assert_eq!(hits[0].linkedid, row.linkedid);
    assert_eq!(hits[0].delivery, "delivered");
    let by_lead = Search {
        lead_phone_e164: Some("+390612345678".into()),
        page: 1,
        per_page: 50,
        ..Search::default()
    };
    assert_eq!(store.search(&by_lead).await.expect("search").1, 0);
    let by_user = Search {
        user_email: Some("agent1001@example.COM".into()),
        page: 1,
        per_page: 50,
        ..Search::default()
    };
    let (hits, _) = store.search(&by_user).await.expect("search");
    assert!(hits.iter().any(|h| h.linkedid == row.linkedid));
    let stats = store.outbox_stats().await.expect("stats");
    assert_eq!((stats.delivered, stats.failed), (1, 0));
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("bridge.db").display());
    exercise(Store::open(&url).await.expect("open")).await;
    // Reopening runs no migration twice and keeps the data.
    let store = Store::open(&url).await.expect("reopen");
    assert_eq!(store.interaction_count().await.expect("count"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store() {
    let Some(base) = support::pg_url() else {
        return;
    };
    let url = support::fresh_pg_database(&base).await;
    // Two bridges starting at once both migrate safely.
    let (a, b) = tokio::join!(Store::open(&url), Store::open(&url));
    a.expect("open a").close().await;
    b.expect("open b").close().await;
    exercise(Store::open(&url).await.expect("open")).await;
}

#[tokio::test]
async fn bad_store_urls_are_named_without_the_password() {
    let err = Store::open("postgres://bridge:hunter2@127.0.0.1:1/nope")
        .await
        .expect_err("nothing listens on port 1");
    let text = err.to_string();
    assert!(
        text.contains("postgres://bridge:***@127.0.0.1:1/nope"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    assert!(Store::open("mysql://x").await.is_err());
}
