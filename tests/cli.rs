//! The command line as an administrator meets it: help on every command, `config check`.

mod support;

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["replay", "--help"],
        vec!["watch", "--help"],
        vec!["search", "--help"],
        vec!["outbox", "list", "--help"],
        vec!["outbox", "show", "--help"],
        vec!["outbox", "retry", "--help"],
        vec!["config", "check", "--help"],
        vec!["zoho", "authorize", "--help"],
        vec!["zoho", "test", "--help"],
        vec!["zoho-sim", "--help"],
        vec!["bench-parse", "--help"],
        vec!["bench-pipeline", "--help"],
        vec!["bench-deliver", "--help"],
    ] {
        let out = support::bridge().args(&args).output().expect("run");
        let text = support::success_stdout(&out);
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
}

#[test]
fn config_check_passes_the_example_and_names_the_key_of_a_bad_file() {
    let example = support::root().join("config/ami-zoho-bridge.example.toml");
    let out = support::bridge()
        .args(["config", "check"])
        .arg(&example)
        .env("AMI_SECRET", "a")
        .env("ZOHO_CLIENT_SECRET", "z")
        .env("AZB_HTTP_TOKEN", "t")
        .output()
        .expect("run");
    let text = support::success_stdout(&out);
    assert!(text.contains("valid"), "{text}");
    assert!(text.contains("1 PBX(s)"), "{text}");
    // A secret missing from the environment is a problem (tests/config_check.rs).

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bridge.toml");
    std::fs::write(
        &bad,
        "[delivery]\nlease_seconds = 5\n[zoho.accounts.main]\ndc = \"eu\"\nclient_id = \"1000.X\"\ntimeout_seconds = 20\n",
    )
    .expect("write");
    let out = support::bridge()
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("delivery.lease_seconds") && err.contains("bridge.toml"),
        "{err}"
    );
}
