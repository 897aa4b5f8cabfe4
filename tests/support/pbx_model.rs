//! What a PBX would list (`CoreShowChannels`, `QueueStatus`) at one point of a recorded
//! capture, rebuilt from the capture's own events; independent of the crate's parser.

use std::collections::HashMap;

use super::ami_server::{message_starts, response};

// ---------------------------------------------------------------------------------------------

/// One message of a capture: its header lines in order.
#[derive(Clone, Debug)]
pub struct Msg {
    pub lines: Vec<(String, String)>,
}

impl Msg {
    pub fn parse(text: &[u8]) -> Msg {
        let text = String::from_utf8_lossy(text);
        let lines = text
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()))
            .collect();
        Msg { lines }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn event(&self) -> Option<&str> {
        self.get("Event")
    }

    /// The recorded `Timestamp:` in seconds.
    pub fn timestamp(&self) -> Option<f64> {
        self.get("Timestamp").and_then(|t| t.parse().ok())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::new();
        for (k, v) in &self.lines {
            out.push_str(k);
            out.push_str(": ");
            out.push_str(v);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// The messages of a capture body (see [`capture_body`]), the client's own Logoff answer left out.
pub fn body_msgs(body: &[u8]) -> Vec<Msg> {
    let starts = message_starts(body);
    let mut out = Vec::new();
    for (i, &s) in starts.iter().enumerate() {
        let e = starts.get(i + 1).copied().unwrap_or(body.len());
        let m = Msg::parse(&body[s..e]);
        if m.lines.is_empty() || m.get("Response") == Some("Goodbye") {
            continue;
        }
        out.push(m);
    }
    out
}

/// The channel snapshot fields Asterisk puts in every channel event and in `CoreShowChannel`.
const SNAPSHOT: [&str; 14] = [
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
];

#[derive(Clone, Debug, Default)]
struct LiveChannel {
    fields: HashMap<&'static str, String>,
    application: String,
    app_data: String,
    bridge: String,
    /// When the channel was created (PBX seconds, as served).
    created: f64,
}

#[derive(Clone, Debug)]
struct QueueCaller {
    queue: String,
    uniqueid: String,
    fields: HashMap<&'static str, String>,
    joined: f64,
    order: u64,
}

/// What a PBX would list at one point of a capture: its live channels, its queues' waiting
/// callers and members. Fed the capture's messages in order, whether or not anybody was
/// listening (a PBX keeps running while a client is away).
#[derive(Clone, Debug, Default)]
pub struct PbxModel {
    channels: HashMap<String, LiveChannel>,
    callers: HashMap<String, QueueCaller>,
    /// (queue, interface) → the last QueueMemberStatus/Added fields.
    members: std::collections::BTreeMap<(String, String), Vec<(String, String)>>,
    queues: std::collections::BTreeSet<String>,
    joins: u64,
}

impl PbxModel {
    /// Applies one message that happened at `at` (PBX seconds, as served).
    pub fn apply(&mut self, m: &Msg, at: f64) {
        let Some(event) = m.event() else { return };
        if let Some(q) = m.get("Queue") {
            self.queues.insert(q.to_string());
        }
        let uid = m.get("Uniqueid").map(str::to_string);
        match event {
            "Newchannel" => {
                if let Some(uid) = &uid {
                    let mut ch = LiveChannel {
                        created: at,
                        ..LiveChannel::default()
                    };
                    for k in SNAPSHOT {
                        ch.fields
                            .insert(k, m.get(k).unwrap_or_default().to_string());
                    }
                    self.channels.insert(uid.clone(), ch);
                }
            }
            "Hangup" => {
                if let Some(uid) = &uid {
                    self.channels.remove(uid);
                    self.callers.remove(uid);
                }
                return;
            }
            "QueueCallerJoin" => {
                if let Some(uid) = &uid {
                    let mut fields = HashMap::new();
                    for k in [
                        "Channel",
                        "CallerIDNum",
                        "CallerIDName",
                        "ConnectedLineNum",
                        "ConnectedLineName",
                    ] {
                        fields.insert(k, m.get(k).unwrap_or_default().to_string());
                    }
                    self.joins += 1;
                    self.callers.insert(
                        uid.clone(),
                        QueueCaller {
                            queue: m.get("Queue").unwrap_or_default().to_string(),
                            uniqueid: uid.clone(),
                            fields,
                            joined: at,
                            order: self.joins,
                        },
                    );
                }
            }
            "QueueCallerLeave" | "QueueCallerAbandon" => {
                if let Some(uid) = &uid {
                    self.callers.remove(uid);
                }
            }
            "QueueMemberStatus" | "QueueMemberAdded" => {
                if let (Some(q), Some(i)) = (m.get("Queue"), m.get("Interface")) {
                    self.members.insert(
                        (q.to_string(), i.to_string()),
                        m.lines
                            .iter()
                            .filter(|(k, _)| {
                                !matches!(k.as_str(), "Event" | "Privilege" | "Timestamp")
                            })
                            .cloned()
                            .collect(),
                    );
                }
            }
            "QueueMemberRemoved" => {
                if let (Some(q), Some(i)) = (m.get("Queue"), m.get("Interface")) {
                    self.members.remove(&(q.to_string(), i.to_string()));
                }
            }
            "DialBegin" | "AgentCalled" => {
                // The dialled leg runs no dialplan of its own: it shows the dialling app.
                if let Some(dest) = m.get("DestUniqueid").and_then(|d| self.channels.get_mut(d)) {
                    if event == "AgentCalled" || dest.application.is_empty() {
                        dest.application = if event == "AgentCalled" {
                            "AppQueue"
                        } else {
                            "AppDial"
                        }
                        .into();
                        dest.app_data = "(Outgoing Line)".into();
                    }
                }
            }
            "BridgeEnter" => {
                if let Some(ch) = uid.as_ref().and_then(|u| self.channels.get_mut(u)) {
                    ch.bridge = m.get("BridgeUniqueid").unwrap_or_default().to_string();
                }
            }
            "BridgeLeave" => {
                if let Some(ch) = uid.as_ref().and_then(|u| self.channels.get_mut(u)) {
                    ch.bridge.clear();
                }
            }
            "Newexten" => {
                if let Some(ch) = uid.as_ref().and_then(|u| self.channels.get_mut(u)) {
                    ch.application = m.get("Application").unwrap_or_default().to_string();
                    ch.app_data = m.get("AppData").unwrap_or_default().to_string();
                }
            }
            _ => {}
        }
        // Every channel event carries the channel's snapshot: the latest one wins.
        if let Some(ch) = uid.as_ref().and_then(|u| self.channels.get_mut(u)) {
            for k in SNAPSHOT {
                if let Some(v) = m.get(k) {
                    ch.fields.insert(k, v.to_string());
                }
            }
        }
    }

    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// The answer to `CoreShowChannels` at `now`, as Asterisk 22 sends it (ActionID second,
    /// no Privilege, no Timestamp, Duration HH:MM:SS, BridgeId, a Complete with ListItems).
    pub fn core_show_channels(&self, id: &str, now: f64) -> Vec<u8> {
        let mut out = response(
            id,
            &[
                ("Response", "Success"),
                ("EventList", "start"),
                ("Message", "Channels will follow"),
            ],
        );
        for ch in self.channels.values() {
            let mut lines = vec![
                ("Event".to_string(), "CoreShowChannel".to_string()),
                ("ActionID".to_string(), id.to_string()),
            ];
            for k in SNAPSHOT {
                lines.push((k.to_string(), ch.fields.get(k).cloned().unwrap_or_default()));
            }
            let secs = (now - ch.created).max(0.0) as u64;
            lines.push(("Application".into(), ch.application.clone()));
            lines.push(("ApplicationData".into(), ch.app_data.clone()));
            lines.push((
                "Duration".into(),
                format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60),
            ));
            lines.push(("BridgeId".into(), ch.bridge.clone()));
            out.extend(Msg { lines }.to_bytes());
        }
        out.extend(
            format!(
                "Event: CoreShowChannelsComplete\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: {}\r\n\r\n",
                self.channels.len()
            )
            .into_bytes(),
        );
        out
    }

    /// The answer to `QueueStatus` at `now`: per queue its QueueParams, QueueMember and the
    /// callers still waiting (QueueEntry, Wait in seconds), ActionID last, no Privilege.
    pub fn queue_status(&self, id: &str, now: f64) -> Vec<u8> {
        let mut out = response(
            id,
            &[
                ("Response", "Success"),
                ("EventList", "start"),
                ("Message", "Queue status will follow"),
            ],
        );
        let mut items = 0;
        for q in &self.queues {
            let mut waiting: Vec<&QueueCaller> =
                self.callers.values().filter(|c| &c.queue == q).collect();
            waiting.sort_by_key(|c| c.order);
            out.extend(
                format!(
                    "Event: QueueParams\r\nQueue: {q}\r\nMax: 0\r\nStrategy: ringall\r\nCalls: {}\r\nHoldtime: 0\r\nTalkTime: 0\r\nCompleted: 0\r\nAbandoned: 0\r\nServiceLevel: 0\r\nServicelevelPerf: 0.0\r\nServicelevelPerf2: 0.0\r\nWeight: 0\r\nActionID: {id}\r\n\r\n",
                    waiting.len()
                )
                .into_bytes(),
            );
            items += 1;
            for ((mq, _), fields) in &self.members {
                if mq != q {
                    continue;
                }
                let get = |k: &str| {
                    fields
                        .iter()
                        .find(|(f, _)| f == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                let mut lines = vec![
                    ("Event".to_string(), "QueueMember".to_string()),
                    ("Queue".to_string(), q.clone()),
                    ("Name".to_string(), get("MemberName")),
                    ("Location".to_string(), get("Interface")),
                ];
                for k in [
                    "StateInterface",
                    "Membership",
                    "Penalty",
                    "CallsTaken",
                    "LastCall",
                    "LastPause",
                    "LoginTime",
                    "InCall",
                    "Status",
                    "Paused",
                    "PausedReason",
                    "Wrapuptime",
                ] {
                    lines.push((k.to_string(), get(k)));
                }
                lines.push(("ActionID".into(), id.to_string()));
                out.extend(Msg { lines }.to_bytes());
                items += 1;
            }
            for (pos, c) in waiting.iter().enumerate() {
                let f = |k: &str| c.fields.get(k).cloned().unwrap_or_default();
                out.extend(
                    format!(
                        "Event: QueueEntry\r\nQueue: {q}\r\nPosition: {}\r\nChannel: {}\r\nUniqueid: {}\r\nCallerIDNum: {}\r\nCallerIDName: {}\r\nConnectedLineNum: {}\r\nConnectedLineName: {}\r\nWait: {}\r\nPriority: 0\r\nActionID: {id}\r\n\r\n",
                        pos + 1,
                        f("Channel"),
                        c.uniqueid,
                        f("CallerIDNum"),
                        f("CallerIDName"),
                        f("ConnectedLineNum"),
                        f("ConnectedLineName"),
                        (now - c.joined).max(0.0) as u64,
                    )
                    .into_bytes(),
                );
                items += 1;
            }
        }
        out.extend(
            format!(
                "Event: QueueStatusComplete\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: {items}\r\n\r\n"
            )
            .into_bytes(),
        );
        out
    }
}
