//! `config check` validates `[zoho.phonebridge]` and `[agent_page]`: a bad value exits 2
//! naming the key and the file.

mod support;

fn check(extra: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bridge.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[zoho.accounts.main]
dc = "eu"
client_id = "1000.CRM"
client_secret = "x"
admin_email = "admin@example.com"

[zoho.accounts.pb]
dc = "eu"
client_id = "1000.PB"
client_secret = "y"
admin_email = "admin@example.com"

[zoho.configurations.default]
account = "main"
subject = "call"
{extra}
"#
        ),
    )
    .expect("write");
    let out = support::bridge()
        .args(["config", "check"])
        .arg(&path)
        .env("AZB_AGENT_LINK_SECRET", "an-agent-link-secret-of-32-bytes")
        .env("AZB_HTTP_TOKEN", "a-test-http-token")
        .output()
        .expect("config check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn good_sections_pass() {
    let (code, text) = check(
        r#"
[zoho.phonebridge]
account = "pb"
log_calls = true
agent_number = "+39069999{ext}"
users = { "mario@example.com" = "pb123" }

[agent_page]
link_secret_env = "AZB_AGENT_LINK_SECRET"
"#,
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("valid"), "{text}");
}

#[test]
fn bad_sections_name_the_key_and_the_file() {
    for (extra, key) in [
        ("[zoho.phonebridge]\naccount = \"nope\"\nagent_number = \"+39069999{ext}\"", "zoho.phonebridge.account"),
        ("[zoho.phonebridge]\naccount = \"main\"\nagent_number = \"+39069999{ext}\"", "zoho.phonebridge.account"),
        ("[zoho.phonebridge]\naccount = \"pb\"\nagent_number = \"0699991001\"", "zoho.phonebridge.agent_number"),
        ("[zoho.phonebridge]\naccount = \"pb\"\nagent_number = \"+39069999{ext}\"\nring_deadline_seconds = 0", "zoho.phonebridge.ring_deadline_seconds"),
        ("[zoho.phonebridge]\naccount = \"pb\"\nagent_number = \"+39069999{ext}\"\nlisten = \"everywhere\"", "zoho.phonebridge.listen"),
        ("[zoho.phonebridge]\naccount = \"pb\"\nagent_number = \"+39069999{ext}\"\nusers = { \"not-an-email\" = \"1\" }", "zoho.phonebridge.users"),
        ("[zoho.phonebridge]\naccount = \"pb\"\nagent_numbr = \"+39069999{ext}\"", "agent_numbr"),
        ("[agent_page]\nlink_hours = 5", "agent_page.link_secret_env"),
        ("[agent_page]\nlink_secret_env = \"X\"\nlink_hours = 0", "agent_page.link_hours"),
    ] {
        let (code, text) = check(extra);
        assert_eq!(code, 2, "{extra}: {text}");
        assert!(text.contains(key), "{extra}: want {key} in {text}");
        assert!(text.contains("bridge.toml"), "{extra}: {text}");
    }
}
