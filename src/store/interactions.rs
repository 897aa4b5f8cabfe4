//! The interaction log: every finished call, with what Zoho made of it, searchable by the
//! Contact's or Lead's phone number and by the user's e-mail.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{now_micros, Store, StoreError};
use crate::calls::{Call, Direction};

/// A search over interactions. Phone filters take the number in E.164 (normalise first).
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// The far party's number, whatever it matched.
    pub phone_e164: Option<String>,
    /// The far party's number, on calls linked to a Contact.
    pub contact_phone_e164: Option<String>,
    /// The far party's number, on calls linked to a Lead.
    pub lead_phone_e164: Option<String>,
    /// The Zoho user who owns the activity, or the agent's e-mail.
    pub user_email: Option<String>,
    /// Ended at or after / before (microseconds since the epoch).
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// 1-based.
    pub page: u32,
    pub per_page: u32,
}

/// One call as the search shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Interaction {
    pub pbx: String,
    pub linkedid: String,
    pub direction: String,
    pub status: String,
    pub caller: Option<String>,
    pub callee: Option<String>,
    pub remote_number: Option<String>,
    pub remote_e164: Option<String>,
    pub queue: Option<String>,
    pub agent: Option<String>,
    pub agent_email: Option<String>,
    pub outbound_route: Option<String>,
    pub started_at: Option<String>,
    pub answered_at: Option<String>,
    pub ended_at: Option<String>,
    pub ring_seconds: Option<i64>,
    pub talk_seconds: i64,
    pub contact_id: Option<String>,
    pub lead_id: Option<String>,
    pub owner_id: Option<String>,
    pub user_email: Option<String>,
    pub activity_id: Option<String>,
    /// pending / delivered / failed over the call's outbox rows; `none` if no trigger fired.
    pub delivery: String,
    /// Why a record of the call is parked (`failed`): Zoho's refusal, or a configuration that
    /// could not render it.
    pub delivery_error: Option<String>,
}

/// The party outside the PBX: the caller of an inbound call, the callee of an outbound one.
pub fn remote_number(call: &Call) -> Option<&str> {
    match call.direction {
        Direction::Inbound => call.caller.as_deref(),
        Direction::Outbound => call.callee.as_deref(),
        Direction::Internal => None,
    }
}

pub(super) async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    pbx: &str,
    call: &Call,
    remote_e164: Option<&str>,
) -> Result<(), StoreError> {
    let mut json = serde_json::to_value(call).map_err(|e| StoreError::Data(e.to_string()))?;
    if let Some(m) = json.as_object_mut() {
        m.remove("channels");
    }
    sqlx::query(
        "INSERT INTO interactions (pbx, linkedid, direction, status, caller, caller_name, callee,
            remote_number, remote_e164, queue, agent, agent_email, outbound_route, started_at,
            answered_at, ended_at, ring_seconds, talk_seconds, incomplete, call_json, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
         ON CONFLICT (pbx, linkedid) DO NOTHING",
    )
    .bind(pbx)
    .bind(&call.linkedid.0)
    .bind(call.direction.as_str())
    .bind(call.status.as_str())
    .bind(call.caller.as_deref())
    .bind(call.caller_name.as_deref())
    .bind(call.callee.as_deref())
    .bind(remote_number(call))
    .bind(remote_e164)
    .bind(call.queue.as_deref())
    .bind(call.agent.as_deref())
    .bind(call.agent_email.as_deref())
    .bind(call.outbound_route.as_deref())
    .bind(call.started_at.0)
    .bind(call.answered_at.map(|t| t.0))
    .bind(call.ended_at.0)
    .bind(call.ring_seconds.map(i64::from))
    .bind(i64::from(call.talk_seconds))
    .bind(i64::from(call.incomplete))
    .bind(json.to_string())
    .bind(now_micros())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn interaction(r: &AnyRow) -> Result<Interaction, StoreError> {
    let pending: i64 = r.try_get("n_pending")?;
    let failed: i64 = r.try_get("n_failed")?;
    let delivered: i64 = r.try_get("n_delivered")?;
    let delivery = if failed > 0 {
        "failed"
    } else if pending > 0 {
        "pending"
    } else if delivered > 0 {
        "delivered"
    } else {
        "none"
    };
    Ok(Interaction {
        pbx: r.try_get("pbx")?,
        linkedid: r.try_get("linkedid")?,
        direction: r.try_get("direction")?,
        status: r.try_get("status")?,
        caller: r.try_get("caller")?,
        callee: r.try_get("callee")?,
        remote_number: r.try_get("remote_number")?,
        remote_e164: r.try_get("remote_e164")?,
        queue: r.try_get("queue")?,
        agent: r.try_get("agent")?,
        agent_email: r.try_get("agent_email")?,
        outbound_route: r.try_get("outbound_route")?,
        started_at: super::rfc3339(r.try_get("started_at")?),
        answered_at: super::rfc3339(r.try_get("answered_at")?),
        ended_at: super::rfc3339(r.try_get("ended_at")?),
        ring_seconds: r.try_get("ring_seconds")?,
        talk_seconds: r.try_get("talk_seconds")?,
        contact_id: r.try_get("contact_id")?,
        lead_id: r.try_get("lead_id")?,
        owner_id: r.try_get("owner_id")?,
        user_email: r.try_get("user_email")?,
        activity_id: r.try_get("activity_id")?,
        delivery: delivery.into(),
        delivery_error: r.try_get("delivery_error")?,
    })
}

impl Store {
    /// Interactions matching every filter given, newest first, one page; and the total.
    pub async fn search(&self, s: &Search) -> Result<(Vec<Interaction>, i64), StoreError> {
        let per_page = s.per_page.clamp(1, 500) as i64;
        let offset = (s.page.max(1) as i64 - 1) * per_page;
        // Each filter is `($n = '' OR column = $n)` so one statement serves every combination.
        let filters = "($1 = '' OR i.remote_e164 = $1)
              AND ($2 = '' OR (i.remote_e164 = $2 AND i.contact_id IS NOT NULL))
              AND ($3 = '' OR (i.remote_e164 = $3 AND i.lead_id IS NOT NULL))
              AND ($4 = '' OR LOWER(i.user_email) = $4 OR LOWER(i.agent_email) = $4)
              AND i.ended_at >= $5 AND i.ended_at < $6";
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let email = s
            .user_email
            .as_deref()
            .map(|e| e.trim().to_lowercase())
            .unwrap_or_default();
        let from = s.from.unwrap_or(i64::MIN);
        let to = s.to.unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT i.*,
                (SELECT COUNT(*) FROM outbox o WHERE o.pbx = i.pbx AND o.linkedid = i.linkedid AND o.state = 'pending') AS n_pending,
                (SELECT COUNT(*) FROM outbox o WHERE o.pbx = i.pbx AND o.linkedid = i.linkedid AND o.state = 'failed') AS n_failed,
                (SELECT COUNT(*) FROM outbox o WHERE o.pbx = i.pbx AND o.linkedid = i.linkedid AND o.state = 'delivered') AS n_delivered,
                (SELECT MIN(o.last_error) FROM outbox o WHERE o.pbx = i.pbx AND o.linkedid = i.linkedid AND o.state = 'failed') AS delivery_error
             FROM interactions i WHERE {filters}
             ORDER BY i.ended_at DESC, i.id DESC LIMIT $7 OFFSET $8"
        );
        let rows = sqlx::query(&sql)
            .bind(text(&s.phone_e164))
            .bind(text(&s.contact_phone_e164))
            .bind(text(&s.lead_phone_e164))
            .bind(email.clone())
            .bind(from)
            .bind(to)
            .bind(per_page)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        let total: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM interactions i WHERE {filters}"
        ))
        .bind(text(&s.phone_e164))
        .bind(text(&s.contact_phone_e164))
        .bind(text(&s.lead_phone_e164))
        .bind(email)
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await?;
        let list = rows
            .iter()
            .map(interaction)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((list, total))
    }

    /// How many calls are stored.
    pub async fn interaction_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM interactions")
            .fetch_one(&self.pool)
            .await?)
    }
}
