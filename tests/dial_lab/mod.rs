//! The click-to-dial lab of the `dial*` tests: a TCP AMI server playing the recorded
//! captures, the dial service on the real AMI client, and its PhoneBridge callback router on
//! a real HTTP listener, configured like the recorded PBX.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::support::originate_server::{
    OriginateServer, OriginateServerConfig, Received, Recorded,
};
use ami_zoho_bridge::ami::{AmiClient, AuthMethod, ClientConfig, SourceEvent};
use ami_zoho_bridge::config::Config;
use ami_zoho_bridge::dial::http::{router, ClickAuth};
use ami_zoho_bridge::dial::report::{ClickErrorCode, MemoryReporter};
use ami_zoho_bridge::dial::{Audit, DialService, DialSettings};
use ami_zoho_bridge::secret::Secret;

pub const CAPTURES: [&str; 8] = [
    "ctd-answered-agent-hangup",
    "ctd-busy",
    "ctd-noanswer",
    "ctd-agent-noanswer",
    "ctd2-answered-callee-hangup",
    "ctd2-busy",
    "ctd2-noanswer",
    "ctd2-agent-noanswer",
];
pub const SECRET: &str = "s3cret-click-param";
pub const WAIT: Duration = Duration::from_secs(20);

pub fn fixtures() -> PathBuf {
    crate::support::root().join("fixtures/ami-real")
}

pub fn truth(name: &str) -> serde_json::Value {
    let text = std::fs::read(fixtures().join(format!("{name}.truth.json"))).unwrap();
    serde_json::from_slice(&text).unwrap()
}

/// The agent's extension in the recorded session (`CallerID: 2002`).
pub fn recorded_agent(rec: &Recorded) -> String {
    rec.originate
        .iter()
        .find(|(k, _)| k == "CallerID")
        .map(|(_, v)| v.clone())
        .unwrap()
}

pub struct Lab {
    pub server: OriginateServer,
    pub service: DialService,
    pub reporter: Arc<MemoryReporter>,
    pub http: String,
    pub recorded: HashMap<String, Recorded>,
    pub config_path: PathBuf,
    pub _dir: tempfile::TempDir,
}

pub fn config_text(port: u16, extra: &str) -> String {
    let mut agents = String::new();
    let mut users = String::new();
    for n in 2001..=2010 {
        agents.push_str(&format!("\"{n}\" = \"agent{n}@example.com\"\n"));
        users.push_str(&format!("\"zu-{n}\" = \"agent{n}@example.com\"\n"));
    }
    format!(
        r#"[[pbx]]
name = "lab"
host = "127.0.0.1"
port = {port}
username = "bridge"
secret = "bridge-secret-123"
auth = "plain"
originate_channel = "Local/{{ext}}@agents"
originate_context = "from-agents"

[calls]
default_country = "IT"

[agents]
{agents}
[click_to_dial]
authorization_name = "X-Azb-Click-Token"
authorization_secret = "{SECRET}"
{extra}
[click_to_dial.zoho_users]
{users}"#
    )
}

pub async fn lab_with(server_cfg: OriginateServerConfig, extra: &str) -> Lab {
    let mut server_cfg = server_cfg;
    let mut recorded = HashMap::new();
    for name in CAPTURES {
        let rec = Recorded::load(&fixtures(), name);
        server_cfg
            .calls
            .insert(rec.exten().to_string(), rec.clone());
        recorded.insert(name.to_string(), rec);
    }
    server_cfg.username = "bridge".into();
    server_cfg.secret = "bridge-secret-123".into();
    let server = OriginateServer::start(server_cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("bridge.toml");
    std::fs::write(&config_path, config_text(server.port, extra)).unwrap();
    let cfg = Config::load(Some(&config_path)).expect("config");
    let (settings, _) = DialSettings::from_config(&cfg).unwrap();
    let mut client_cfg = ClientConfig::new(
        "127.0.0.1",
        server.port,
        "bridge",
        Secret::new("bridge-secret-123"),
    );
    client_cfg.auth = AuthMethod::Plain;
    let (client, mut events) = AmiClient::connect(client_cfg).await.expect("AMI login");
    let reporter = Arc::new(MemoryReporter::default());
    let service = DialService::new(settings, Arc::new(client), reporter.clone()).unwrap();
    let feeder = service.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let SourceEvent::Message(m) = ev {
                feeder.observe(&m);
            }
        }
    });
    let auth = ClickAuth::from_config(&cfg.click_to_dial).unwrap();
    let app = router(
        service.clone(),
        auth,
        Arc::new(cfg.click_to_dial.zoho_users.clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Lab {
        server,
        service,
        reporter,
        http,
        recorded,
        config_path,
        _dir: dir,
    }
}

pub async fn lab() -> Lab {
    lab_with(OriginateServerConfig::default(), "").await
}

impl Lab {
    pub async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        secret: Option<&str>,
    ) -> reqwest::Response {
        let mut req = reqwest::Client::new()
            .post(format!("{}{path}", self.http))
            .timeout(WAIT)
            .form(form);
        if let Some(s) = secret {
            req = req.header("X-Azb-Click-Token", s);
        }
        req.send().await.expect("HTTP")
    }

    pub async fn click(&self, zohouser: &str, number: &str) -> reqwest::Response {
        self.post(
            "/phonebridge/clicktodial",
            &[("zohouser", zohouser), ("tonumber", number)],
            Some(SECRET),
        )
        .await
    }

    /// Waits (bounded) for the audit line closing `click_id`.
    pub async fn outcome(&self, click_id: &str) -> Audit {
        let wait = async {
            loop {
                if let Some(a) = self.service.audit().into_iter().find(|a| {
                    a.click_id.as_deref() == Some(click_id)
                        && ["connected", "failed", "cancelled", "unknown"]
                            .contains(&a.result.as_str())
                }) {
                    return a;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .expect("an outcome in time")
    }

    pub fn originates(&self) -> Vec<Received> {
        self.server.actions("Originate")
    }
}

/// The E.164 form of a recorded national number.
pub fn e164(national: &str) -> String {
    format!("+39{}", national.trim_start_matches('+'))
}

/// What the truth file says Zoho must be told (`None`: nothing, the far end answered).
pub fn expected_code(name: &str) -> Option<ClickErrorCode> {
    let call = &truth(name)["calls"][0];
    match call["final_status"].as_str().unwrap() {
        "answered" => None,
        "busy" => Some(ClickErrorCode::Busy),
        "noanswer" => Some(ClickErrorCode::NoAnswer),
        other => panic!("{name}: unexpected truth status {other}"),
    }
}
