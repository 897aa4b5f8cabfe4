//! `ami-zoho-bridge dial --agent EMAIL NUMBER --config C`: an administrator's click.
//!
//! The same service and guard rails as a click in Zoho: the agent must be known, the number
//! must pass the allow / deny rules, and the click is audited. The command logs in to the
//! PBX of `[click_to_dial] pbx` (or the first `[[pbx]]`), sends the one `Originate`, follows
//! the call until its outcome is known and prints one JSON line per step on stdout:
//! `queued`, `agent_answered`, then `connected`, `failed` (with the `clicktodialerror` code),
//! `cancelled` or `unknown`. Exit 0 when the far end answered, 1 otherwise, 2 for a
//! configuration or usage problem (unknown agent included).

use std::sync::Arc;
use std::time::Duration;

use ami_zoho_bridge::ami::{AmiClient, ClientConfig, SourceEvent};
use ami_zoho_bridge::config::Config;
use ami_zoho_bridge::dial::book::Outcome;
use ami_zoho_bridge::dial::report::LogReporter;
use ami_zoho_bridge::dial::{
    ClickRequest, ClickSource, DialService, DialSettings, Progress, Refusal,
};
use serde_json::json;

use super::UsageError;

pub(crate) async fn dial(cfg: &Config, agent: &str, number: &str) -> anyhow::Result<()> {
    let (settings, index) = DialSettings::from_config(cfg).map_err(UsageError)?;
    let pbx = &cfg.pbx[index];
    let secret = pbx.secret(index).map_err(UsageError)?;
    let mut client_cfg = ClientConfig::new(&pbx.host, pbx.port, &pbx.username, secret);
    client_cfg.auth = pbx.auth;
    let ring = settings.originate.originate_timeout_seconds;
    let far = settings.click.far_end_timeout_seconds;
    let (client, mut events) = AmiClient::connect(client_cfg)
        .await
        .map_err(|e| anyhow::anyhow!("PBX '{}': {e}", pbx.name))?;
    let service =
        DialService::new(settings, Arc::new(client), Arc::new(LogReporter)).map_err(UsageError)?;
    let feeder = {
        let service = service.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                match ev {
                    SourceEvent::Message(m) => service.observe(&m),
                    SourceEvent::Disconnected { .. } => service.session_lost(),
                    _ => {}
                }
            }
        })
    };
    let accepted = service
        .click(ClickRequest {
            source: ClickSource::Cli,
            agent_email: agent.to_string(),
            zohouser: None,
            number: number.to_string(),
            record: None,
        })
        .await;
    let mut accepted = match accepted {
        Ok(a) => a,
        Err(r @ Refusal::UnknownAgent(_)) => {
            feeder.abort();
            return Err(UsageError(format!("{r} (key agents)")).into());
        }
        Err(r) => {
            feeder.abort();
            println!(
                "{}",
                json!({"state": "refused", "result": r.kind(), "code": r.code().map(|c| c.as_str()), "reason": r.to_string()})
            );
            anyhow::bail!("click refused: {r}");
        }
    };
    println!(
        "{}",
        json!({"click_id": accepted.click_id, "state": "queued", "to": accepted.e164,
               "exten": accepted.exten, "agent_extension": accepted.agent_extension})
    );
    // The service closes every click by itself (ring timeout, then the far-end timeout);
    // this outer bound only guards against a service that never says.
    let bound = Duration::from_secs_f64(ring + far + 30.0);
    let outcome = tokio::time::timeout(bound, async {
        while let Some(step) = accepted.progress.recv().await {
            match step {
                Progress::AgentAnswered { channel } => println!(
                    "{}",
                    json!({"click_id": accepted.click_id, "state": "agent_answered", "channel": channel})
                ),
                Progress::Done(o) => return Some(o),
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    feeder.abort();
    let outcome = outcome.unwrap_or(Outcome::Unknown {
        reason: "no outcome from the dial service".into(),
    });
    let mut line = serde_json::to_value(&outcome)?;
    line["click_id"] = json!(accepted.click_id);
    line["state"] = json!(outcome.label());
    println!("{line}");
    match outcome {
        Outcome::Connected => Ok(()),
        other => anyhow::bail!("click {}: {}", accepted.click_id, other.label()),
    }
}
