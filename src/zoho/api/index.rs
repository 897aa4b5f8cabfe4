//! The phone index of Contacts and Leads: read in full 200 records a request (following
//! Zoho's page tokens), then refreshed with `If-Modified-Since`, so a new caller costs no
//! search.

use std::time::Instant;

use reqwest::Method;
use serde_json::Value;

use super::{
    BuiltIndex, IndexSettings, IndexState, Module, PhoneMatch, ZohoApi, ZohoError, INDEX_RETRY,
};
use crate::zoho::phonebook::{phone_fields, PhoneBook};

impl ZohoApi {
    /// A lookup in the phone index, reading or refreshing it first when due. `None` when the
    /// index cannot be read (the caller searches Zoho instead).
    pub(super) async fn indexed(
        &self,
        settings: IndexSettings,
        number: &str,
    ) -> Option<Option<PhoneMatch>> {
        let mut state = self.book.lock().await;
        if state.failed_at.is_some_and(|t| t.elapsed() < INDEX_RETRY) {
            return None;
        }
        let kept = self.index_kept.load(std::sync::atomic::Ordering::Relaxed);
        let read = match &mut state.built {
            // The keeper task refreshes it off this path.
            Some(_) if kept => Ok(()),
            Some(b) if b.built.elapsed() < settings.rebuild => {
                if b.refreshed.elapsed() < settings.refresh {
                    Ok(())
                } else {
                    self.refresh_index(b).await
                }
            }
            _ => self.build_index().await.map(|b| state.built = Some(b)),
        };
        match read {
            Ok(()) => {
                state.failed_at = None;
                state.built.as_ref().map(|b| b.book.lookup(number))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read Contacts and Leads for the phone index: searching Zoho for callers for now");
                state.failed_at = Some(Instant::now());
                None
            }
        }
    }

    /// Keeps the index fresh off the lookup path (the delivery's keeper task calls this every
    /// few seconds): a refresh or rebuild is read without holding the index, then applied, so
    /// a call being delivered never waits for Zoho's pages. The first build stays with the
    /// first lookup.
    pub async fn keep_index(&self) {
        let Some(settings) = self.index else {
            return;
        };
        self.index_kept
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let since = {
            let state = self.book.lock().await;
            if state.failed_at.is_some_and(|t| t.elapsed() < INDEX_RETRY) {
                return;
            }
            match &state.built {
                None => return,
                Some(b) if b.built.elapsed() >= settings.rebuild => None,
                Some(b) if b.refreshed.elapsed() >= settings.refresh => Some(b.since),
                Some(_) => return,
            }
        };
        match since {
            None => {
                let fresh = self.build_index().await;
                let mut state = self.book.lock().await;
                match fresh {
                    Ok(fresh) => {
                        state.built = Some(fresh);
                        state.failed_at = None;
                    }
                    Err(e) => Self::index_failed(&mut state, &e),
                }
            }
            Some(since) => {
                let started = jiff::Timestamp::now();
                // A minute of overlap: records saved while the last read ran are read again.
                let from = since - jiff::SignedDuration::from_secs(60);
                let mut changed: Vec<(Module, Value)> = Vec::new();
                let mut read = Ok(());
                for module in [Module::Contacts, Module::Leads] {
                    read = self
                        .read_people(module, Some(from), &mut |r| {
                            changed.push((module, r.clone()))
                        })
                        .await;
                    if read.is_err() {
                        break;
                    }
                }
                let mut state = self.book.lock().await;
                match read {
                    Ok(()) => {
                        if let Some(b) = state.built.as_mut() {
                            for (module, r) in &changed {
                                b.book.upsert(*module, r);
                            }
                            b.since = started;
                            b.refreshed = Instant::now();
                        }
                        state.failed_at = None;
                    }
                    Err(e) => Self::index_failed(&mut state, &e),
                }
            }
        }
    }

    fn index_failed(state: &mut IndexState, e: &ZohoError) {
        tracing::warn!(error = %e, "cannot refresh the phone index: trying again later");
        state.failed_at = Some(Instant::now());
    }

    pub(super) async fn build_index(&self) -> Result<BuiltIndex, ZohoError> {
        let since = jiff::Timestamp::now();
        let mut book = PhoneBook::new(self.country, self.last_digits);
        for module in [Module::Contacts, Module::Leads] {
            self.read_people(module, None, &mut |r| book.upsert(module, r))
                .await?;
        }
        tracing::info!(
            records = book.len(),
            "phone index of Contacts and Leads read"
        );
        Ok(BuiltIndex {
            book,
            built: Instant::now(),
            refreshed: Instant::now(),
            since,
        })
    }

    pub(super) async fn refresh_index(&self, b: &mut BuiltIndex) -> Result<(), ZohoError> {
        let since = jiff::Timestamp::now();
        // A minute of overlap: records saved while the last read ran are read again.
        let from = b.since - jiff::SignedDuration::from_secs(60);
        for module in [Module::Contacts, Module::Leads] {
            let book = &mut b.book;
            self.read_people(module, Some(from), &mut |r| book.upsert(module, r))
                .await?;
        }
        b.since = since;
        b.refreshed = Instant::now();
        Ok(())
    }

    /// Reads a module's records (all, or those modified since `since`) into `book`, 200 a
    /// request, following Zoho's page tokens past its 2000-record page limit.
    pub(super) async fn read_people(
        &self,
        module: Module,
        since: Option<jiff::Timestamp>,
        sink: &mut (dyn FnMut(&Value) + Send),
    ) -> Result<(), ZohoError> {
        let mut fields = vec!["Full_Name", "Last_Name", "Owner", "Modified_Time"];
        fields.extend_from_slice(phone_fields(module));
        let fields = fields.join(",");
        let headers: Vec<(&str, String)> = since
            .map(|t| {
                let t = t
                    .to_zoned(jiff::tz::TimeZone::UTC)
                    .strftime("%Y-%m-%dT%H:%M:%S%:z");
                vec![("If-Modified-Since", t.to_string())]
            })
            .unwrap_or_default();
        let mut page = 1u32;
        let mut token: Option<String> = None;
        loop {
            let page_text = page.to_string();
            let mut q = vec![
                ("fields", fields.as_str()),
                ("per_page", "200"),
                ("sort_by", "Modified_Time"),
                ("sort_order", "asc"),
            ];
            match &token {
                Some(t) => q.push(("page_token", t.as_str())),
                None => q.push(("page", page_text.as_str())),
            }
            let a = self
                .request_with(Method::GET, module.as_str(), &q, None, &headers)
                .await?;
            match a.status {
                // Nothing (new) to read.
                204 | 304 => return Ok(()),
                200 => {}
                _ => return Err(Self::fail(&a, &format!("reading {}", module.as_str()))),
            }
            let body = a.body.unwrap_or_default();
            for r in body
                .get("data")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                sink(r);
            }
            let info = body.get("info");
            let more = info
                .and_then(|i| i.get("more_records"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if !more {
                return Ok(());
            }
            token = info
                .and_then(|i| i.get("next_page_token"))
                .and_then(Value::as_str)
                .map(str::to_string);
            page += 1;
        }
    }
}
