//! Memory of the phone index for a large org, measured with a counting allocator (as
//! `benches/live_calls.rs` does): N generated Contacts and Leads (half each, one Italian
//! mobile number each, realistic names, owners and times) are upserted into a `PhoneBook`;
//! the growth of live heap bytes divided by the numbers indexed is the figure. Lookups are
//! checked to find every tenth record. Also prints the credits a full rebuild costs through
//! the paged list API (one credit per 200 records).
//!
//! `cargo run --release --example phone_index_memory [N]` (default 1 000 000) prints
//! `records=N bytes_per_number=B rebuild_credits_list_api=C`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use ami_zoho_bridge::zoho::api::Module;
use ami_zoho_bridge::zoho::phonebook::PhoneBook;
use serde_json::json;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: delegates every call to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let country = ami_zoho_bridge::phone::country("IT");
    let before = LIVE.load(Ordering::Relaxed);
    let mut book = PhoneBook::new(country, 9);
    let number = |i: usize| format!("+39 3{:02} {:07}", 20 + i % 80, i);
    for i in 0..n {
        let module = if i % 2 == 0 {
            Module::Contacts
        } else {
            Module::Leads
        };
        // Record ids are 19-digit strings, as Zoho's.
        let record = json!({
            "id": format!("57257670{:011}", i),
            "Full_Name": format!("Persona Numero {i}"),
            "Owner": { "email": format!("agent{}@example.com", i % 100) },
            "Modified_Time": "2026-11-23T21:32:02+01:00",
            "Mobile": number(i),
        });
        book.upsert(module, &record);
    }
    let after = LIVE.load(Ordering::Relaxed);
    for i in (0..n).step_by(10) {
        assert!(
            book.lookup(&number(i)).is_some(),
            "record {i} found by its number"
        );
    }
    println!(
        "records={} bytes_per_number={} rebuild_credits_list_api={}",
        book.len(),
        (after - before) / book.len().max(1) as isize,
        n.div_ceil(200)
    );
}
