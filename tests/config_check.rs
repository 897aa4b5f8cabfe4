//! `config check` on broken files, through the real binary: exit 2 and every problem named
//! with its file (or environment variable) and key; the example configuration passes.

mod support;

use std::path::Path;

/// A complete, valid configuration (secrets inline) that each case below breaks in one place.
const GOOD: &str = r#"
[[pbx]]
name = "motion-1"
host = "127.0.0.1"
username = "zoho-bridge"
secret = "ami-secret"

[calls]
timezone = "Europe/Rome"
default_country = "IT"
tags = ["vip"]

[agents]
"1001" = "mario.rossi@example.com"

[store]
url = "sqlite:///tmp/does-not-matter.db"

[http]
listen = "127.0.0.1:8089"
token = "page-token"

[zoho.accounts.main]
dc = "eu"
client_id = "1000.X"
client_secret = "zoho-secret"
admin_email = "admin@example.com"

[zoho.configurations.default]
account = "main"
subject = "{{ call_type }} call {{ caller }} -> {{ callee }}"

[[triggers]]
name = "every call"
all = [ { field = "vip", op = "exists" } ]
any = [ { field = "status", op = "in", value = ["answered", "abandoned"] } ]
actions = [ { zoho_call = "default" } ]
"#;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn check(dir: &Path, name: &str, text: &str, env: &[(&str, &str)]) -> Run {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    let mut cmd = support::bridge();
    cmd.args(["config", "check"]).arg(&path);
    // The check reads the environment: start from none of the bridge's variables.
    for (k, _) in std::env::vars() {
        if k.starts_with("AZB_") || k.ends_with("_SECRET") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The problem lines (one per problem, before the summary line).
fn problems(r: &Run) -> Vec<&str> {
    r.stderr
        .lines()
        .filter(|l| !l.starts_with("error:") && !l.trim().is_empty())
        .collect()
}

/// `GOOD` with `from` replaced by `to` (which must occur).
fn broken(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from}");
    GOOD.replacen(from, to, 1)
}

#[test]
fn the_good_file_and_the_example_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = check(dir.path(), "good.toml", GOOD, &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("valid"), "{}", r.stdout);

    let example =
        std::fs::read_to_string(support::root().join("config/ami-zoho-bridge.example.toml"))
            .expect("example");
    let env = [
        ("AMI_SECRET", "a"),
        ("ZOHO_CLIENT_SECRET", "z"),
        ("AZB_HTTP_TOKEN", "t"),
    ];
    let r = check(dir.path(), "example.toml", &example, &env);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    // Without its secrets in the environment, the example names each missing variable.
    let r = check(dir.path(), "example.toml", &example, &[]);
    assert_eq!(r.code, Some(2));
    let p = problems(&r);
    assert_eq!(p.len(), 3, "{p:#?}");
    for var in ["AMI_SECRET", "ZOHO_CLIENT_SECRET", "AZB_HTTP_TOKEN"] {
        assert!(
            p.iter()
                .any(|l| l.contains(var) && l.contains("example.toml")),
            "{var}: {p:#?}"
        );
    }
}

/// One broken thing per case: the exit code is 2 and the one problem names file and key.
#[test]
fn each_broken_file_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: Vec<(&str, String, &str, &str)> = vec![
        // (case, file text, key named, words of the message)
        (
            "unknown section",
            format!("{GOOD}\n[delivry]\nworkers = 2\n"),
            "key delivry:",
            "did you mean 'delivery'",
        ),
        (
            "unknown key",
            broken("timezone = ", "timezon = "),
            "key calls.timezon:",
            "did you mean 'timezone'",
        ),
        (
            "unknown key in an account",
            broken("admin_email = ", "admin_emial = "),
            "key zoho.accounts.main.admin_emial:",
            "did you mean 'admin_email'",
        ),
        (
            "unknown trigger field",
            broken("field = \"vip\"", "field = \"queu\""),
            "key triggers[0].all[0].field:",
            "did you mean 'queue'",
        ),
        (
            "status value",
            broken("\"abandoned\"]", "\"abandon\"]"),
            "key triggers[0].any[0].value:",
            "'abandon' is no status",
        ),
        (
            "country code",
            broken("default_country = \"IT\"", "default_country = \"ITA\""),
            "key calls.default_country:",
            "'ITA' is not a country code",
        ),
        (
            "agent e-mail",
            broken("\"mario.rossi@example.com\"", "\"mario.rossi\""),
            "key agents.\"1001\":",
            "not an e-mail address",
        ),
        (
            "admin e-mail",
            broken(
                "admin_email = \"admin@example.com\"",
                "admin_email = \"admin\"",
            ),
            "key zoho.accounts.main.admin_email:",
            "not an e-mail address",
        ),
        (
            "missing admin_email",
            broken("admin_email = \"admin@example.com\"\n", ""),
            "key zoho.accounts.main.admin_email:",
            "missing",
        ),
        (
            "accounts URL",
            broken(
                "dc = \"eu\"",
                "accounts_url = \"accounts.zoho.eu\"\napi_domain = \"https://www.zohoapis.eu\"",
            ),
            "key zoho.accounts.main.accounts_url:",
            "not an http(s) URL",
        ),
        (
            "listen address",
            broken("listen = \"127.0.0.1:8089\"", "listen = \"localhost\""),
            "key http.listen:",
            "not an address",
        ),
        (
            "unset HTTP token",
            broken("token = \"page-token\"", "token_env = \"PAGE_TOKEN\""),
            "key http.token_env:",
            "PAGE_TOKEN is not set",
        ),
        (
            "missing AMI secret",
            broken("secret = \"ami-secret\"", "secret_env = \"PBX_SECRET\""),
            "key pbx[0].secret_env:",
            "PBX_SECRET is not set",
        ),
        (
            "missing Zoho secret",
            broken(
                "client_secret = \"zoho-secret\"",
                "client_secret_env = \"ZS\"",
            ),
            "key zoho.accounts.main.client_secret_env:",
            "ZS is not set",
        ),
        (
            "unknown filter",
            broken("{{ callee }}\"", "{{ callee | shout }}\""),
            "key zoho.configurations.default.subject:",
            "unknown filter",
        ),
        (
            "template syntax",
            broken("{{ callee }}\"", "{{ callee \""),
            "key zoho.configurations.default.subject:",
            "template error",
        ),
        (
            "ping 1e300",
            broken(
                "secret = \"ami-secret\"",
                "secret = \"ami-secret\"\nping_seconds = 1e300",
            ),
            "key pbx[0].ping_seconds:",
            "out of range",
        ),
        (
            "poll 1e300",
            format!("{GOOD}\n[delivery]\npoll_seconds = 1e300\n"),
            "key delivery.poll_seconds:",
            "out of range",
        ),
        (
            "negative",
            format!("{GOOD}\n[delivery]\nbackoff_initial_seconds = -1\n"),
            "key delivery.backoff_initial_seconds:",
            "out of range",
        ),
        (
            "NaN",
            broken("timezone = ", "grace_seconds = nan\ntimezone = "),
            "key calls.grace_seconds:",
            "out of range",
        ),
        (
            "count",
            broken("admin_email = ", "max_in_flight = 0\nadmin_email = "),
            "key zoho.accounts.main.max_in_flight:",
            "out of range",
        ),
        (
            "type",
            broken("timezone = ", "grace_seconds = \"soon\"\ntimezone = "),
            "key calls.grace_seconds:",
            "invalid type",
        ),
        (
            "time zone",
            broken("\"Europe/Rome\"", "\"Mars/Olympus\""),
            "key calls.timezone:",
            "unknown time zone",
        ),
        (
            "data center",
            broken("dc = \"eu\"", "dc = \"europe\""),
            "key zoho.accounts.main.dc:",
            "unknown data center",
        ),
        (
            "trigger without actions",
            broken("actions = [ { zoho_call = \"default\" } ]", "actions = []"),
            "key triggers[0].actions:",
            "does nothing",
        ),
        (
            "unknown configuration",
            broken("zoho_call = \"default\"", "zoho_call = \"defualt\""),
            "triggers[0]",
            "no Zoho configuration 'defualt'",
        ),
        (
            "store url",
            broken("sqlite:///tmp/does-not-matter.db", "mysql://x"),
            "key store.url:",
            "neither sqlite",
        ),
        (
            "empty file",
            "# nothing but a comment\n".to_string(),
            "the file is empty",
            "example",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (case, text, key, words)) in cases.iter().enumerate() {
        let name = format!("case{i}.toml");
        let r = check(dir.path(), &name, text, &[]);
        let p = problems(&r);
        let named = p
            .iter()
            .any(|l| l.contains(&name) && l.contains(key) && l.contains(words));
        // The empty file also lacks the page's token, the misspelt admin_email is missing too;
        // every other case has one problem.
        let want = match *case {
            "empty file" | "unknown key in an account" => 2,
            _ => 1,
        };
        let count_ok = p.len() == want;
        if r.code != Some(2) || !named || !count_ok {
            failures.push(format!(
                "{case}: exit {:?}, wanted '{key}' '{words}':\n{}",
                r.code, r.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Many problems at once: every one is listed, not the first only.
#[test]
fn every_problem_is_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = GOOD
        .replacen("default_country = \"IT\"", "default_country = \"ITA\"", 1)
        .replacen("\"mario.rossi@example.com\"", "\"mario.rossi\"", 1)
        .replacen("field = \"vip\"", "field = \"queu\"", 1)
        .replacen("{{ callee }}\"", "{{ callee | shout }}\"", 1)
        + "\n[delivry]\nworkers = 1\n[delivery]\npoll_seconds = 1e300\n";
    let r = check(dir.path(), "many.toml", &text, &[]);
    assert_eq!(r.code, Some(2));
    let p = problems(&r);
    for key in [
        "key delivry:",
        "key calls.default_country:",
        "key agents.\"1001\":",
        "key triggers[0].all[0].field:",
        "key zoho.configurations.default.subject:",
        "key delivery.poll_seconds:",
    ] {
        assert!(
            p.iter().any(|l| l.contains(key)),
            "{key} missing from:\n{}",
            r.stderr
        );
    }
    assert_eq!(p.len(), 6, "{}", r.stderr);
    assert!(r.stderr.contains("6 problem(s)"), "{}", r.stderr);
}

/// A value from an `AZB_…` variable is blamed on the variable, not on the file.
#[test]
fn environment_problems_name_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = check(
        dir.path(),
        "env.toml",
        GOOD,
        &[
            ("AZB_DELIVERY__POLL_SECONDS", "-3"),
            ("AZB_CALLS__GRACE_SECONDS", "soon"),
        ],
    );
    assert_eq!(r.code, Some(2));
    let p = problems(&r);
    assert!(
        p.iter().any(|l| l.starts_with(
            "environment variable AZB_DELIVERY__POLL_SECONDS: key delivery.poll_seconds:"
        )),
        "{}",
        r.stderr
    );
    assert!(
        p.iter().any(|l| l.starts_with(
            "environment variable AZB_CALLS__GRACE_SECONDS: key calls.grace_seconds:"
        )),
        "{}",
        r.stderr
    );
    assert!(!p.iter().any(|l| l.contains("env.toml")), "{}", r.stderr);

    // A misspelt key in a variable, and variables that are no keys (secrets, test switches).
    let r = check(
        dir.path(),
        "env.toml",
        GOOD,
        &[
            ("AZB_DELIVERY__WROKERS", "3"),
            ("AZB_HTTP_TOKEN", "t"),
            ("AZB_REQUIRE_PG", "1"),
        ],
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    let p = problems(&r);
    assert_eq!(p.len(), 1, "{}", r.stderr);
    assert!(
        p[0].starts_with("environment variable AZB_DELIVERY__WROKERS: key delivery.wrokers:")
            && p[0].contains("did you mean 'workers'"),
        "{}",
        r.stderr
    );
}

/// The example's triggers make exactly one Call activity per call of the busy hour (an
/// abandoned call gets a follow-up Task besides, never a second Call).
#[test]
fn example_triggers_make_one_call_per_call() {
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            support::root().join("fixtures/ami-sip/busyhour-seed11.truth.json"),
        )
        .expect("truth"),
    )
    .expect("json");
    let calls = truth["calls"].as_array().expect("calls").len();
    let out = support::bridge()
        .arg("replay")
        .arg(support::root().join("fixtures/ami-sip/busyhour-seed11.ami.gz"))
        .args(["--emit", "activities", "--config"])
        .arg(support::root().join("config/ami-zoho-bridge.example.toml"))
        .output()
        .expect("run");
    let text = support::success_stdout(&out);
    let mut per_call: std::collections::BTreeMap<String, usize> = Default::default();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("line");
        if v["module"] == "Calls" {
            *per_call
                .entry(v["linkedid"].as_str().unwrap_or_default().into())
                .or_default() += 1;
        }
    }
    assert_eq!(
        per_call.len(),
        calls,
        "one Call record for every call of the truth file"
    );
    assert!(per_call.values().all(|n| *n == 1), "{per_call:?}");
}
