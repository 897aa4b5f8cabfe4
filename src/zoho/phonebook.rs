//! A local index of the phone numbers of Zoho Contacts and Leads.
//!
//! Zoho's search compares digits as typed, so one caller costs up to eight searches (E.164,
//! `00`, national form, in two modules, then the last digits), and a contact center's callers
//! are mostly new numbers that no cache has seen. The index is read once (200 records a
//! request), kept fresh with `If-Modified-Since` reads, and rebuilt now and then so deleted
//! records leave it. A lookup then costs no request, and numbers are compared normalised, so
//! `+39 06 1234 567` on the record matches a caller `061234567`. Pure data: the reads are in
//! [`super::api`].

use std::collections::HashMap;

use serde_json::Value;

use super::api::{Module, PhoneMatch};
use crate::phone;

/// Phone fields read from each module (Zoho's standard ones).
pub fn phone_fields(module: Module) -> &'static [&'static str] {
    match module {
        Module::Contacts => &["Phone", "Mobile", "Home_Phone", "Other_Phone", "Asst_Phone"],
        Module::Leads => &["Phone", "Mobile"],
    }
}

#[derive(Debug, Clone)]
struct Entry {
    found: PhoneMatch,
    modified: String,
    keys: Vec<String>,
}

/// The index: records by id, and numbers (E.164, and the last digits) to record ids.
#[derive(Debug, Default)]
pub struct PhoneBook {
    records: HashMap<(Module, String), Entry>,
    by_number: HashMap<String, Vec<(Module, String)>>,
    country: Option<phonenumber::country::Id>,
    last_digits: usize,
}

impl PhoneBook {
    pub fn new(default_country: Option<phonenumber::country::Id>, last_digits: usize) -> Self {
        PhoneBook {
            country: default_country,
            last_digits,
            ..PhoneBook::default()
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Index keys of one written number: `+E164`, and `~` + its last digits.
    fn keys_of(&self, number: &str) -> Vec<String> {
        let forms = phone::forms(number, self.country, self.last_digits);
        let mut keys = Vec::new();
        if let Some(e) = forms.e164 {
            keys.push(e);
        }
        if let Some(last) = forms.last_digits {
            keys.push(format!("~{last}"));
        }
        keys
    }

    /// Adds or replaces a record as the list API returns it (`id`, name, phone fields,
    /// `Owner.email`, `Modified_Time`).
    pub fn upsert(&mut self, module: Module, record: &Value) {
        let Some(id) = record.get("id").and_then(Value::as_str) else {
            return;
        };
        self.remove(module, id);
        let text = |k: &str| record.get(k).and_then(Value::as_str);
        let mut keys: Vec<String> = Vec::new();
        for field in phone_fields(module) {
            if let Some(n) = text(field).filter(|n| !n.trim().is_empty()) {
                for k in self.keys_of(n) {
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
            }
        }
        if keys.is_empty() {
            return;
        }
        let key = (module, id.to_string());
        for k in &keys {
            self.by_number
                .entry(k.clone())
                .or_default()
                .push(key.clone());
        }
        let found = PhoneMatch {
            module,
            id: id.to_string(),
            name: text("Full_Name")
                .or_else(|| text("Last_Name"))
                .map(str::to_string),
            owner_email: record
                .pointer("/Owner/email")
                .and_then(Value::as_str)
                .map(str::to_string),
        };
        let modified = text("Modified_Time").unwrap_or("").to_string();
        self.records.insert(
            key,
            Entry {
                found,
                modified,
                keys,
            },
        );
    }

    fn remove(&mut self, module: Module, id: &str) {
        let key = (module, id.to_string());
        if let Some(old) = self.records.remove(&key) {
            for k in old.keys {
                if let Some(ids) = self.by_number.get_mut(&k) {
                    ids.retain(|x| x != &key);
                    if ids.is_empty() {
                        self.by_number.remove(&k);
                    }
                }
            }
        }
    }

    /// The Contact (before any Lead) whose number is `number`, else the one whose number ends
    /// with the same last digits; among several, the most recently modified.
    pub fn lookup(&self, number: &str) -> Option<PhoneMatch> {
        let keys = self.keys_of(number);
        let (exact, last): (Vec<&String>, Vec<&String>) =
            keys.iter().partition(|k| !k.starts_with('~'));
        for group in [exact, last] {
            for module in [Module::Contacts, Module::Leads] {
                let best = group
                    .iter()
                    .filter_map(|k| self.by_number.get(*k))
                    .flatten()
                    .filter(|(m, _)| *m == module)
                    .filter_map(|key| self.records.get(key))
                    .max_by(|a, b| a.modified.cmp(&b.modified));
                if let Some(e) = best {
                    return Some(e.found.clone());
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn written_forms_meet_and_updates_replace() {
        let mut b = PhoneBook::new(phone::country("IT"), 9);
        b.upsert(
            Module::Leads,
            &json!({"id": "L1", "Full_Name": "Luca", "Phone": "06 1234 5678", "Modified_Time": "2026-01-01T00:00:00+00:00"}),
        );
        b.upsert(
            Module::Contacts,
            &json!({"id": "C1", "Full_Name": "Mario", "Mobile": "+39 06 1234 5678", "Modified_Time": "2025-01-01T00:00:00+00:00"}),
        );
        // Contacts before Leads, whatever the dates.
        assert_eq!(b.lookup("0039 0612345678").map(|m| m.id), Some("C1".into()));
        // The contact's number changes: the lead is what is left for the old one.
        b.upsert(
            Module::Contacts,
            &json!({"id": "C1", "Full_Name": "Mario", "Mobile": "+39 333 000 1111"}),
        );
        assert_eq!(b.lookup("+390612345678").map(|m| m.id), Some("L1".into()));
        assert_eq!(b.lookup("3330001111").map(|m| m.id), Some("C1".into()));
        assert_eq!(b.lookup("+390699999999"), None);
        assert_eq!(b.len(), 2);
    }
}
