//! The Zoho client over real HTTP against the strict simulator: OAuth on data centers,
//! refresh, throttling, scopes, owners, phone linking, batch inserts, faults. Every record the
//! simulator accepted is then checked against a schema written from the API reference,
//! independently of the rendering code, and no log line or error may contain a secret.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ami_zoho_bridge::config::AccountConfig;
use ami_zoho_bridge::secret::Secret;
use ami_zoho_bridge::zoho::api::{Module, RecordOutcome, ZohoApi};
use ami_zoho_bridge::zoho::oauth::OAuth;
use ami_zoho_bridge::zoho::sim::{
    self, Fault, Seed, SimHandle, SimLimits, SimPerson, BRIDGE_SCOPES,
};
use ami_zoho_bridge::zoho::{Retry, ZohoError};
use serde_json::{json, Map, Value};

const CLIENT_ID: &str = "1000.DEMOCLIENT";
const CLIENT_SECRET: &str = "demo-client-secret";

/// Log lines written while a test runs (the subscriber is per thread: tests are
/// current-thread).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

struct Lab {
    sim: SimHandle,
    dir: tempfile::TempDir,
}

impl Lab {
    async fn start(seed: Seed, limits: SimLimits) -> Lab {
        let sim = SimHandle::start("127.0.0.1:0".parse().unwrap(), seed, limits)
            .await
            .expect("simulator");
        Lab {
            sim,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("tokens.json")
    }

    fn account(&self, dc: &str) -> AccountConfig {
        AccountConfig {
            accounts_url: Some(self.sim.url(dc)),
            api_domain: Some(self.sim.url(dc)),
            client_id: CLIENT_ID.into(),
            client_secret: Some(Secret::new(CLIENT_SECRET)),
            admin_email: Some("admin@example.com".into()),
            token_file: Some(self.token_file()),
            timeout_seconds: 1.0,
            ..AccountConfig::default()
        }
    }

    fn client(&self, dc: &str) -> (Arc<OAuth>, ZohoApi) {
        self.client_with(dc, |_| {})
    }

    fn client_with(
        &self,
        dc: &str,
        tune: impl FnOnce(&mut AccountConfig),
    ) -> (Arc<OAuth>, ZohoApi) {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let mut acc = self.account(dc);
        tune(&mut acc);
        let oauth = Arc::new(OAuth::new("main", &acc, http.clone()).expect("oauth"));
        let api = ZohoApi::new(oauth.clone(), &acc, "IT", http);
        (oauth, api)
    }

    /// A client already authorised on `eu` with every scope the bridge needs.
    async fn authorized(&self) -> (Arc<OAuth>, ZohoApi) {
        self.authorized_with(|_| {}).await
    }

    async fn authorized_with(
        &self,
        tune: impl FnOnce(&mut AccountConfig),
    ) -> (Arc<OAuth>, ZohoApi) {
        let (oauth, api) = self.client_with("eu", tune);
        let code = self.sim.grant_code(CLIENT_ID, "eu", BRIDGE_SCOPES, None);
        oauth.exchange_code(&code).await.expect("grant exchange");
        (oauth, api)
    }

    /// The secrets that must never be printed: client secret and every token stored.
    fn secrets(&self) -> Vec<String> {
        let mut out = vec![CLIENT_SECRET.to_string()];
        if let Ok(text) = std::fs::read_to_string(self.token_file()) {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            for k in ["refresh_token", "access_token"] {
                if let Some(s) = v[k].as_str() {
                    out.push(s.to_string());
                }
            }
        }
        out
    }
}

fn assert_no_secret(lab: &Lab, texts: &[String]) {
    for secret in lab.secrets() {
        for t in texts {
            assert!(!t.contains(&secret), "a secret leaked into: {t}");
        }
    }
}

fn call_record(subject: &str) -> Map<String, Value> {
    json!({
        "Subject": subject,
        "Call_Type": "Inbound",
        "Call_Start_Time": "2026-11-23T21:20:13+01:00",
        "Call_Duration": "00:12",
        "Caller_ID": "+390612345678",
    })
    .as_object()
    .cloned()
    .unwrap()
}

#[tokio::test]
async fn grant_exchange_valid_expired_reused_and_wrong_dc() {
    let (logs, _guard) = capture_logs();
    let lab = Lab::start(sim::demo_seed(), SimLimits::default()).await;
    let (oauth, _) = lab.client("eu");
    let mut errors = Vec::new();

    let code = lab.sim.grant_code(CLIENT_ID, "eu", BRIDGE_SCOPES, None);
    let tokens = oauth
        .exchange_code(&code)
        .await
        .expect("a fresh code works");
    assert!(tokens
        .scope
        .as_deref()
        .unwrap_or("")
        .contains("ZohoCRM.users.READ"));
    assert_eq!(
        tokens.api_domain,
        lab.sim.url("eu"),
        "the token answer's api_domain is used"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(lab.token_file())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "tokens are readable by their owner only");
    }
    assert!(oauth.access().await.is_ok());

    let reused = oauth
        .exchange_code(&code)
        .await
        .expect_err("a code is good once");
    assert_eq!(reused.code(), Some("invalid_code"));
    assert_eq!(reused.retry(), Retry::Permanent);
    errors.push(format!("{reused} {reused:?}"));

    let short = lab.sim.grant_code(
        CLIENT_ID,
        "eu",
        BRIDGE_SCOPES,
        Some(Duration::from_millis(50)),
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    let expired = oauth.exchange_code(&short).await.expect_err("expired code");
    assert_eq!(expired.code(), Some("invalid_code"));
    errors.push(format!("{expired} {expired:?}"));

    let us_code = lab.sim.grant_code(CLIENT_ID, "com", BRIDGE_SCOPES, None);
    let wrong_dc = oauth
        .exchange_code(&us_code)
        .await
        .expect_err("code of another DC");
    assert_eq!(wrong_dc.code(), Some("invalid_code"));
    assert!(
        wrong_dc.to_string().contains("another data center"),
        "{wrong_dc}"
    );
    errors.push(format!("{wrong_dc} {wrong_dc:?} {oauth:?}"));

    // The same code works on its own DC.
    let (us, _) = lab.client("com");
    us.exchange_code(&us_code).await.expect("right DC");

    errors.push(logs.text());
    assert_no_secret(&lab, &errors);
}

#[tokio::test]
async fn refresh_before_expiry_and_once_after_invalid_token() {
    let (logs, _guard) = capture_logs();
    let limits = SimLimits {
        token_lifetime: Duration::from_secs(61),
        ..SimLimits::default()
    };
    let lab = Lab::start(sim::demo_seed(), limits).await;
    let (oauth, api) = lab.authorized().await;
    let first = oauth.access().await.expect("token").token;
    assert_eq!(lab.sim.stats().refreshes, 0, "a fresh token is reused");
    // Within a minute of expiry the client refreshes before using it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = oauth.access().await.expect("token").token;
    assert_ne!(first, second);
    assert_eq!(lab.sim.stats().refreshes, 1);
    drop(api);
    assert_no_secret(&lab, &[logs.text()]);
    // A token Zoho calls invalid is refreshed once and the request retried. (A lab of its own
    // with hour-long tokens: in the one above, every token is always within a minute of
    // expiry after a second, so a slow moment would add a refresh before the request.)
    let lab = Lab::start(sim::demo_seed(), SimLimits::default()).await;
    let (_, api) = lab.authorized().await;
    lab.sim.inject(Fault::ExpireAccessTokens);
    let users = api.active_users().await.expect("retried after refresh");
    assert!(users.len() >= 3);
    assert_eq!(lab.sim.stats().refreshes, 1);
    assert_no_secret(&lab, &[logs.text()]);
}

#[tokio::test]
async fn concurrent_requests_share_one_refresh() {
    let lab = Lab::start(sim::demo_seed(), SimLimits::default()).await;
    let (oauth, _api) = lab.authorized().await;
    lab.sim.inject(Fault::ExpireAccessTokens);
    // Forget the token locally too, then ask from many tasks at once.
    let t = oauth.access().await.expect("token").token;
    oauth.invalidate(&t).await;
    let before = lab.sim.stats().refreshes;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let o = oauth.clone();
            tokio::spawn(async move { o.access().await.map(|a| a.token) })
        })
        .collect();
    for t in tasks {
        t.await.expect("join").expect("token");
    }
    assert_eq!(lab.sim.stats().refreshes - before, 1, "single-flight");
}

#[tokio::test]
async fn refresh_throttle_is_a_clear_transient_error() {
    let limits = SimLimits {
        refresh_limit: 2,
        ..SimLimits::default()
    };
    let lab = Lab::start(sim::demo_seed(), limits).await;
    let (oauth, _api) = lab.authorized().await; // the exchange mints token 1
    let t = oauth.access().await.expect("token").token;
    oauth.invalidate(&t).await;
    oauth.access().await.expect("second token within the limit");
    let t = oauth.access().await.expect("token").token;
    oauth.invalidate(&t).await;
    let err = oauth
        .access()
        .await
        .expect_err("third token in the window is refused");
    assert_eq!(err.retry(), Retry::Transient);
    assert!(err.to_string().contains("too many token requests"), "{err}");
    // Backing off: asking again at once does not reach Zoho (each try would count).
    let before = lab.sim.stats().token_requests;
    let again = oauth.access().await.expect_err("still backing off");
    assert!(again.to_string().contains("next try in"), "{again}");
    assert_eq!(lab.sim.stats().token_requests, before);
}

#[tokio::test]
async fn owner_by_email_case_insensitive_else_the_administrator() {
    let (logs, _guard) = capture_logs();
    let lab = Lab::start(sim::demo_seed(), SimLimits::default()).await;
    let (_, api) = lab.authorized().await;
    let owner = api
        .owner_for(Some("agent1002@example.com"))
        .await
        .expect("owner");
    assert_eq!(owner.id, "5725767000000411003");
    assert!(!owner.fallback);
    let owner = api
        .owner_for(Some("Agent1002@Example.COM"))
        .await
        .expect("owner");
    assert_eq!(owner.id, "5725767000000411003");
    let fallback = api
        .owner_for(Some("nobody@example.com"))
        .await
        .expect("owner");
    assert_eq!(fallback.id, "5725767000000411001", "admin@example.com");
    assert!(fallback.fallback);
    assert!(
        logs.text().contains("nobody@example.com"),
        "the fallback is logged with the agent's e-mail"
    );
    let none = api.owner_for(None).await.expect("owner");
    assert!(none.fallback);
    // Users come from the cache: one listing served all these look-ups.
    let listings = lab.sim.stats().crm_requests;
    api.owner_for(Some("agent1001@example.com"))
        .await
        .expect("owner");
    assert_eq!(lab.sim.stats().crm_requests, listings);
}

#[tokio::test]
async fn contacts_and_leads_are_found_in_any_written_form() {
    let mut seed = sim::demo_seed();
    seed.contacts.push(SimPerson {
        id: "5725767000000512009".into(),
        full_name: "Shared Number (contact)".into(),
        phones: [("Phone".to_string(), "+39 02 5555 1234".to_string())].into(),
        owner_email: None,
    });
    seed.leads.push(SimPerson {
        id: "5725767000000513009".into(),
        full_name: "Shared Number (lead)".into(),
        phones: [("Mobile".to_string(), "02 5555 1234".to_string())].into(),
        owner_email: None,
    });
    let lab = Lab::start(seed, SimLimits::default()).await;
    // The same answers from the local phone index and from Zoho's search.
    for index in [true, false] {
        find_in_any_written_form(&lab, index).await;
    }
}

async fn find_in_any_written_form(lab: &Lab, index: bool) {
    let (_, api) = lab.authorized_with(|a| a.phone_index = index).await;
    let cases = [
        // Lead stored as "06 1234 5678".
        (
            "+39 06 1234 5678",
            Some((Module::Leads, "5725767000000513001")),
        ),
        (
            "0039061234 5678",
            Some((Module::Leads, "5725767000000513001")),
        ),
        ("06 1234 5678", Some((Module::Leads, "5725767000000513001"))),
        // Contact stored as "+39 06 1234 567".
        ("061234567", Some((Module::Contacts, "5725767000000512001"))),
        (
            "0039 06 1234 567",
            Some((Module::Contacts, "5725767000000512001")),
        ),
        // Contact stored as "0039 333 123 4567".
        (
            "3331234567",
            Some((Module::Contacts, "5725767000000512002")),
        ),
        (
            "+393331234567",
            Some((Module::Contacts, "5725767000000512002")),
        ),
        // Contacts before Leads.
        (
            "0255551234",
            Some((Module::Contacts, "5725767000000512009")),
        ),
        ("+390699999999", None),
        ("anonymous", None),
    ];
    for (number, want) in cases {
        let got = api
            .find_by_phone(number)
            .await
            .expect("search")
            .map(|m| (m.module, m.id));
        let want = want.map(|(m, id)| (m, id.to_string()));
        assert_eq!(got, want, "{number} (phone index {index})");
    }
    // Cached: asking again costs no request.
    let before = lab.sim.stats().crm_requests;
    api.find_by_phone("+39 06 1234 5678").await.expect("search");
    assert_eq!(lab.sim.stats().crm_requests, before);
}

/// The index reads every page (past Zoho's 2000-record page limit, with page tokens), then
/// answers without a request; a refresh asks only for what changed and sees a new contact.
#[tokio::test]
async fn phone_index_reads_every_page_and_picks_up_changes() {
    let mut seed = sim::demo_seed();
    for i in 0..2300u32 {
        seed.contacts.push(SimPerson {
            id: format!("57257670000011{i:05}"),
            full_name: format!("Contact {i}"),
            phones: [(
                "Mobile".to_string(),
                format!("+39 347 {:07}", 1_000_000 + i),
            )]
            .into(),
            owner_email: None,
        });
    }
    let lab = Lab::start(seed, SimLimits::default()).await;
    let (_, api) = lab
        .authorized_with(|a| a.phone_index_refresh_seconds = 3600)
        .await;
    let before = lab.sim.stats().crm_requests;
    let last = api.find_by_phone("3471002299").await.expect("lookup");
    assert_eq!(last.map(|m| m.id).as_deref(), Some("5725767000001102299"));
    // 2302 contacts at 200 a page (12 pages, the last ones by token) and one page of leads.
    assert_eq!(lab.sim.stats().crm_requests - before, 13);
    let before = lab.sim.stats().crm_requests;
    for n in [
        "+39 347 100 0007",
        "00393471000123",
        "+390699999999",
        "06 1234 5678",
    ] {
        api.find_by_phone(n).await.expect("lookup");
    }
    assert_eq!(
        lab.sim.stats().crm_requests,
        before,
        "index lookups are free"
    );

    // Refreshing on every lookup: nothing changed is a 304, a new contact is found.
    let (_, api) = lab
        .authorized_with(|a| a.phone_index_refresh_seconds = 0)
        .await;
    assert!(api
        .find_by_phone("+39 347 100 0001")
        .await
        .expect("lookup")
        .is_some());
    assert_eq!(
        api.find_by_phone("+39 055 123 4567").await.expect("lookup"),
        None
    );
    lab.sim.upsert_person(
        "Contacts",
        SimPerson {
            id: "5725767000000519999".into(),
            full_name: "New Caller".into(),
            phones: [("Phone".to_string(), "055 1234567".to_string())].into(),
            owner_email: None,
        },
    );
    let found = api.find_by_phone("+39 055 123 4567").await.expect("lookup");
    assert_eq!(found.map(|m| m.id).as_deref(), Some("5725767000000519999"));
}

#[tokio::test]
async fn batch_insert_reports_each_records_fate() {
    let lab = Lab::start(sim::demo_seed(), SimLimits::default()).await;
    let (_, api) = lab.authorized().await;
    let mut bad = call_record("bad type");
    bad.insert("Call_Type".into(), json!("Sideways"));
    let mut no_subject = call_record("");
    no_subject.remove("Subject");
    let records = vec![call_record("one"), bad, call_record("three"), no_subject];
    let out = api.insert("Calls", &records, Some(&[])).await.expect("207");
    assert!(matches!(&out[0], RecordOutcome::Created { .. }));
    assert!(matches!(&out[2], RecordOutcome::Created { .. }));
    match &out[1] {
        RecordOutcome::Failed(ZohoError::Api {
            code, field, retry, ..
        }) => {
            assert_eq!(code, "INVALID_DATA");
            assert_eq!(field.as_deref(), Some("Call_Type"));
            assert_eq!(*retry, Retry::Permanent);
        }
        other => panic!("{other:?}"),
    }
    match &out[3] {
        RecordOutcome::Failed(e) => {
            assert_eq!(e.code(), Some("MANDATORY_NOT_FOUND"));
            assert!(
                e.to_string().contains("Subject"),
                "the error names the field: {e}"
            );
        }
        other => panic!("{other:?}"),
    }
    // All failing: HTTP 400, still one outcome per record.
    let mut zero = call_record("zero");
    zero.insert("Call_Duration".into(), json!("00:00"));
    let out = api
        .insert("Calls", &[zero], None)
        .await
        .expect("400 with data");
    assert!(matches!(&out[0], RecordOutcome::Failed(e) if e.code() == Some("INVALID_DATA")));
    // More than 100: split into batches.
    let many: Vec<_> = (0..150)
        .map(|i| call_record(&format!("bulk {i}")))
        .collect();
    let before = lab.sim.stats().inserts;
    let out = api
        .insert("Calls", &many, Some(&[]))
        .await
        .expect("two batches");
    assert_eq!(out.len(), 150);
    assert!(out
        .iter()
        .all(|o| matches!(o, RecordOutcome::Created { .. })));
    assert_eq!(lab.sim.stats().inserts - before, 2);
    check_schema(&lab.sim.records("Calls"), &lab);
}

#[tokio::test]
async fn every_fault_kind_maps_to_the_right_retry_class() {
    let (logs, _guard) = capture_logs();
    let lab = Lab::start(sim::demo_seed(), SimLimits::default()).await;
    let (_, api) = lab.authorized().await;
    let mut errors = Vec::new();
    let check = |fault: Fault, want: Retry, stored: usize| {
        let sim = lab.sim.clone();
        let api = &api;
        async move {
            sim.inject(fault.clone());
            let before = sim.records("Calls").len();
            let err = api
                .insert("Calls", &[call_record("fault")], None)
                .await
                .expect_err(&format!("{fault:?} must fail"));
            assert_eq!(err.retry(), want, "{fault:?}: {err}");
            assert_eq!(sim.records("Calls").len() - before, stored, "{fault:?}");
            format!("{err} {err:?}")
        }
    };
    errors.push(check(Fault::Status(500), Retry::Transient, 0).await);
    errors.push(check(Fault::Status(429), Retry::Transient, 0).await);
    // Slower than the client's timeout: the insert may or may not have happened.
    errors.push(check(Fault::Slow(Duration::from_millis(1500)), Retry::Unknown, 0).await);
    // Stored, then the connection dropped: unknown outcome, and the record exists.
    errors.push(check(Fault::DropAfterStore, Retry::Unknown, 1).await);
    // Revoked grant: 401, one refresh, which Zoho refuses: permanent.
    errors.push(check(Fault::RevokeTokens, Retry::Permanent, 0).await);
    errors.push(logs.text());
    assert_no_secret(&lab, &errors);
    check_schema(&lab.sim.records("Calls"), &lab);
}

#[tokio::test]
async fn scope_mismatch_is_named() {
    let lab = Lab::start(sim::demo_seed(), SimLimits::default()).await;
    let (oauth, api) = lab.client("eu");
    let code = lab.sim.grant_code(
        CLIENT_ID,
        "eu",
        "ZohoCRM.users.READ,ZohoCRM.modules.calls.CREATE",
        None,
    );
    oauth.exchange_code(&code).await.expect("exchange");
    let probes = api.probe().await;
    let missing: Vec<&str> = probes
        .iter()
        .filter(|(_, _, r)| r.as_ref().err().and_then(|e| e.code()) == Some("OAUTH_SCOPE_MISMATCH"))
        .map(|(_, scope, _)| *scope)
        .collect();
    assert_eq!(
        missing,
        vec![
            "ZohoCRM.modules.contacts.READ",
            "ZohoCRM.modules.leads.READ",
            "ZohoCRM.modules.calls.READ"
        ]
    );
    assert!(
        lab.sim.records("Calls").is_empty(),
        "the insert probe creates nothing"
    );
}

/// `zoho authorize` then `zoho test` from the command line, as an admin would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_authorize_and_test_name_a_missing_scope() {
    let lab = Lab::start(sim::demo_seed(), SimLimits::default()).await;
    let config = lab.dir.path().join("bridge.toml");
    let write_config = |token_file: &str| {
        std::fs::write(
            &config,
            format!(
                "[zoho.accounts.main]\naccounts_url = \"{url}\"\napi_domain = \"{url}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_env = \"TEST_ZOHO_SECRET\"\nadmin_email = \"admin@example.com\"\ntoken_file = \"{token_file}\"\n",
                url = lab.sim.url("eu"),
            ),
        )
        .expect("config");
    };
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            support::bridge()
                .args(&args)
                .env("TEST_ZOHO_SECRET", CLIENT_SECRET)
                .output()
                .expect("run the binary")
        })
    };
    let cfg = config.display().to_string();
    for (scopes, file, ok) in [
        (BRIDGE_SCOPES, "full.json", true),
        (
            "ZohoCRM.users.READ,ZohoCRM.modules.calls.CREATE,ZohoCRM.modules.leads.READ",
            "partial.json",
            false,
        ),
    ] {
        let token_file = lab.dir.path().join(file).display().to_string();
        write_config(&token_file);
        let code = lab.sim.grant_code(CLIENT_ID, "eu", scopes, None);
        let out = run(vec![
            "zoho".into(),
            "authorize".into(),
            "--account".into(),
            "main".into(),
            "--code".into(),
            code,
            "--config".into(),
            cfg.clone(),
        ])
        .await
        .expect("join");
        support::success_stdout(&out);
        let out = run(vec![
            "zoho".into(),
            "test".into(),
            "--account".into(),
            "main".into(),
            "--config".into(),
            cfg.clone(),
        ])
        .await
        .expect("join");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.success(), ok, "{stdout}{stderr}");
        assert!(stdout.contains("Ada Admin"), "{stdout}");
        if !ok {
            assert!(
                stdout.contains("missing OAuth scope ZohoCRM.modules.contacts.READ"),
                "{stdout}"
            );
            assert!(stderr.contains("ZohoCRM.modules.contacts.READ"), "{stderr}");
        }
        assert!(!stdout.contains(CLIENT_SECRET) && !stderr.contains(CLIENT_SECRET));
    }
}

/// A schema of Zoho Call records, written from `docs/zoho-crm-api.md` §4 (not from the
/// rendering code): types, formats, picklists and lookups that must exist.
fn check_schema(records: &[Value], lab: &Lab) {
    let seed = sim::demo_seed();
    let _ = lab;
    let iso = |s: &str| {
        s.len() == 25
            && jiff::Timestamp::strptime("%Y-%m-%dT%H:%M:%S%:z", s).is_ok()
            && (s.as_bytes()[19] == b'+' || s.as_bytes()[19] == b'-')
    };
    for r in records {
        let o = r.as_object().expect("object");
        let s = |k: &str| o.get(k).and_then(Value::as_str);
        assert!(
            s("Subject").is_some_and(|v| !v.is_empty() && v.chars().count() <= 255),
            "{r}"
        );
        let t = s("Call_Type").expect("Call_Type");
        assert!(["Inbound", "Outbound", "Missed"].contains(&t), "{r}");
        assert!(s("Call_Start_Time").is_some_and(iso), "{r}");
        if t != "Missed" {
            let d = s("Call_Duration").expect("duration on Inbound/Outbound");
            let (m, sec) = d.split_once(':').expect("MM:SS");
            assert!(
                m.len() >= 2
                    && sec.len() == 2
                    && m.parse::<u32>().is_ok()
                    && sec.parse::<u32>().is_ok_and(|x| x < 60),
                "{r}"
            );
            assert_ne!(d, "00:00", "{r}");
        }
        if let Some(v) = s("Outgoing_Call_Status") {
            assert_eq!(t, "Outbound");
            assert!(["Scheduled", "Completed"].contains(&v));
        }
        if let Some(owner) = o.get("Owner") {
            let id = owner["id"].as_str().expect("Owner.id");
            assert!(seed.users.iter().any(|u| u.id == id && u.active), "{r}");
        }
        if let Some(who) = o.get("Who_Id") {
            let id = who["id"].as_str().expect("Who_Id.id");
            assert!(seed.contacts.iter().any(|c| c.id == id), "{r}");
            assert!(o
                .get("What_Id")
                .is_none_or(|_| s("$se_module") != Some("Leads")));
        }
        if let Some(what) = o.get("What_Id") {
            assert_eq!(s("$se_module"), Some("Leads"), "{r}");
            let id = what["id"].as_str().expect("What_Id.id");
            assert!(seed.leads.iter().any(|c| c.id == id), "{r}");
        }
        if let Some(p) = s("Call_Purpose") {
            assert!(seed.picklists["Call_Purpose"].iter().any(|x| x == p), "{r}");
        }
    }
}

/// Real captures rendered with lookups from the simulator and inserted: every record is
/// accepted and passes the schema.
#[tokio::test]
async fn rendered_lab_calls_are_accepted_and_pass_the_schema() {
    use ami_zoho_bridge::ami::replay::Replay;
    use ami_zoho_bridge::ami::SourceEvent;
    use ami_zoho_bridge::calls::{Micros, Output, Tracker};
    use ami_zoho_bridge::config::Config;
    use ami_zoho_bridge::zoho::activity::{render_call, Lookups, Renderer, Templates};

    let lab = Lab::start(sim::demo_seed(), SimLimits::default()).await;
    let (_, api) = lab.authorized().await;
    let cfg =
        Config::load(Some(&support::root().join("fixtures/ami-real/bridge.toml"))).expect("config");
    let conf = &cfg.zoho.configurations["default"];
    let templates = Templates::compile(conf).expect("templates");
    let tz = jiff::tz::TimeZone::get(&cfg.calls.timezone).expect("tz");
    let capture = support::root().join("fixtures/ami-real/mixed-small.ami");
    let mut tracker = Tracker::new(cfg.calls.clone());
    let mut out = Vec::new();
    for ev in Replay::open(&capture).expect("capture") {
        if let SourceEvent::Message(m) = ev.expect("decode") {
            tracker.on_message(&m, Micros(0), &mut out);
        }
    }
    tracker.finish(&mut out);
    let mut records = Vec::new();
    for o in out {
        let Output::Finished(call) = o else { continue };
        let owner = api
            .owner_for(call.agent_email.as_deref())
            .await
            .expect("owner");
        let found = match call.caller.as_deref() {
            Some(n) => api.find_by_phone(n).await.expect("lookup"),
            None => None,
        };
        let lookups = Lookups {
            owner_id: Some(owner.id),
            contact_id: found
                .as_ref()
                .filter(|m| m.module == Module::Contacts)
                .map(|m| m.id.clone()),
            lead_id: found
                .as_ref()
                .filter(|m| m.module == Module::Leads)
                .map(|m| m.id.clone()),
        };
        records.push(
            render_call(
                Renderer {
                    conf,
                    templates: &templates,
                    tz: &tz,
                    links: None,
                },
                &call,
                "every call",
                Some(&lookups),
            )
            .expect("render"),
        );
    }
    assert_eq!(records.len(), 5);
    let outcomes = api
        .insert("Calls", &records, Some(&[]))
        .await
        .expect("insert");
    for (o, r) in outcomes.iter().zip(&records) {
        assert!(
            matches!(o, RecordOutcome::Created { .. }),
            "{o:?} for {r:?}"
        );
    }
    let stored = lab.sim.records("Calls");
    assert!(
        stored
            .iter()
            .any(|r| r.get("Who_Id").is_some() || r.get("What_Id").is_some()),
        "the caller is linked"
    );
    check_schema(&stored, &lab);
}

/// Zoho keeps a limited number of live access tokens per refresh token: minting one more
/// evicts the oldest, which then fails with INVALID_TOKEN (and the client recovers by
/// refreshing).
#[tokio::test]
async fn live_token_cap_evicts_the_oldest() {
    let limits = SimLimits {
        live_tokens: 2,
        ..SimLimits::default()
    };
    let lab = Lab::start(sim::demo_seed(), limits).await;
    let (oauth, api) = lab.authorized().await;
    let first = oauth.access().await.expect("token").token;
    for _ in 0..2 {
        let t = oauth.access().await.expect("token").token;
        oauth.invalidate(&t).await;
        oauth.access().await.expect("refreshed");
    }
    let url = format!("{}/crm/v8/users?type=ActiveUsers", lab.sim.url("eu"));
    let answer = reqwest::Client::new()
        .get(&url)
        .header(
            "Authorization",
            format!("Zoho-oauthtoken {}", first.expose()),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(answer.status().as_u16(), 401);
    let body: Value = answer.json().await.expect("json");
    assert_eq!(body["code"], "INVALID_TOKEN");
    // A token in the wrong header scheme is refused too.
    let current = oauth.access().await.expect("token").token;
    let bearer = reqwest::Client::new()
        .get(&url)
        .header("Authorization", format!("Bearer {}", current.expose()))
        .send()
        .await
        .expect("request");
    assert_eq!(bearer.status().as_u16(), 401);
    assert!(
        api.active_users().await.is_ok(),
        "the client's own token still works"
    );
}
