//! Control endpoints for manual trials and the demo org.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::*;

// ---- control endpoints for manual trials ---------------------------------------------------

#[derive(Deserialize)]
pub(super) struct CodeRequest {
    client_id: String,
    dc: String,
    scopes: String,
}

pub(super) async fn new_code(
    State(inner): State<Shared>,
    Json(req): Json<CodeRequest>,
) -> Response {
    let handle = SimHandle {
        addr: "127.0.0.1:0"
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0))),
        inner,
    };
    Json(json!({ "code": handle.grant_code(&req.client_id, &req.dc, &req.scopes, None) }))
        .into_response()
}

pub(super) async fn list_records(
    State(inner): State<Shared>,
    Path(module): Path<String>,
) -> Response {
    Json(json!({ "data": lock(&inner).records.get(&module).cloned().unwrap_or_default() }))
        .into_response()
}

/// The scopes the bridge needs, as one Self Client "Generate Code" scope string.
pub const BRIDGE_SCOPES: &str =
    "ZohoCRM.modules.calls.CREATE,ZohoCRM.modules.calls.READ,ZohoCRM.modules.tasks.CREATE,ZohoCRM.modules.contacts.READ,ZohoCRM.modules.leads.READ,ZohoCRM.users.READ";

/// A small org for demos and tests: an administrator, agents, contacts and leads whose
/// numbers are written the way people type them.
pub fn demo_seed() -> Seed {
    let user = |id: &str, email: &str, name: &str| SimUser {
        id: id.into(),
        email: email.into(),
        full_name: name.into(),
        active: true,
    };
    let person = |id: &str, name: &str, phones: &[(&str, &str)]| SimPerson {
        id: id.into(),
        full_name: name.into(),
        phones: phones
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        owner_email: None,
    };
    let _ = Map::<String, Value>::new();
    Seed {
        clients: vec![SimClient {
            client_id: "1000.DEMOCLIENT".into(),
            client_secret: "demo-client-secret".into(),
        }],
        users: vec![
            user("5725767000000411001", "admin@example.com", "Ada Admin"),
            user("5725767000000411002", "agent1001@example.com", "Agent 1001"),
            user("5725767000000411003", "agent1002@example.com", "Agent 1002"),
            user("5725767000000411004", "agent1003@example.com", "Agent 1003"),
            user("5725767000000411005", "agent2001@example.com", "Agent 2001"),
        ],
        contacts: vec![
            person(
                "5725767000000512001",
                "Mario Rossi",
                &[("Phone", "+39 06 1234 567")],
            ),
            person(
                "5725767000000512002",
                "Giulia Bianchi",
                &[("Mobile", "0039 333 123 4567")],
            ),
        ],
        leads: vec![person(
            "5725767000000513001",
            "Luca Verdi",
            &[("Phone", "06 1234 5678")],
        )],
        picklists: HashMap::from([(
            "Call_Purpose".to_string(),
            vec![
                "Support".to_string(),
                "Sales".to_string(),
                "Prospecting".to_string(),
            ],
        )]),
        custom_fields: vec!["Bridge_Key__c".into()],
        unique_fields: vec!["Bridge_Key__c".into()],
        grant_codes: Vec::new(),
    }
}
