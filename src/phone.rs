//! Phone numbers as the PBX writes them, turned into the forms a CRM may have stored.
//!
//! A PBX hands over `+390612345678`, `00390612345678`, `0612345678` or `06 1234 5678` for the
//! same line; people type them into Zoho in any of those forms too. Normalisation goes through
//! the `phonenumber` crate (Google's libphonenumber metadata) with a default country, and the
//! lookup then tries the E.164, international-with-`00` and national forms, in that order.

use phonenumber::country::Id;
use phonenumber::Mode;

/// The forms of one number worth searching for, most specific first, without duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneForms {
    /// `+390612345678`
    pub e164: Option<String>,
    /// Every distinct digit string to try: E.164 digits with `+`, `00` international, national.
    pub variants: Vec<String>,
    /// The last digits, for a last-resort "ends with" search.
    pub last_digits: Option<String>,
}

/// Digits of a number (and a leading `+`), everything else dropped.
pub fn digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

/// Parses an ISO 3166 alpha-2 country code (`IT`), case-insensitively.
pub fn country(code: &str) -> Option<Id> {
    code.to_ascii_uppercase().parse().ok()
}

/// All the forms of `raw`, read with `default_country` when it has no country prefix.
pub fn forms(raw: &str, default_country: Option<Id>, last_n: usize) -> PhoneForms {
    let cleaned: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '+')
        .collect();
    let mut variants: Vec<String> = Vec::new();
    let push = |v: String, variants: &mut Vec<String>| {
        if !v.is_empty() && !variants.contains(&v) {
            variants.push(v);
        }
    };
    // `00` is the international prefix in most of the world; libphonenumber wants `+`.
    let for_parse = match cleaned.strip_prefix("00") {
        Some(rest) if !cleaned.starts_with('+') => format!("+{rest}"),
        _ => cleaned.clone(),
    };
    let parsed = phonenumber::parse(default_country, &for_parse)
        .ok()
        .filter(|n| phonenumber::is_valid(n) || n.national().value() > 0);
    let e164 = parsed
        .as_ref()
        .map(|n| n.format().mode(Mode::E164).to_string());
    if let (Some(n), Some(e)) = (&parsed, &e164) {
        push(e.clone(), &mut variants);
        push(format!("00{}", e.trim_start_matches('+')), &mut variants);
        push(
            digits(&n.format().mode(Mode::National).to_string()),
            &mut variants,
        );
    }
    push(cleaned.clone(), &mut variants);
    let all = digits(&cleaned);
    let last_digits =
        (last_n > 0 && all.len() >= last_n).then(|| all[all.len() - last_n..].to_string());
    PhoneForms {
        e164,
        variants,
        last_digits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_written_form_gives_the_same_e164() {
        let it = country("it");
        for raw in [
            "+39 06 1234 5678",
            "0039061234 5678",
            "06 1234 5678",
            "+390612345678",
            "06-1234-5678",
        ] {
            let f = forms(raw, it, 9);
            assert_eq!(f.e164.as_deref(), Some("+390612345678"), "{raw}");
            assert!(
                f.variants.contains(&"0612345678".to_string()),
                "{raw}: {:?}",
                f.variants
            );
            assert!(f.variants.contains(&"00390612345678".to_string()), "{raw}");
            assert_eq!(f.last_digits.as_deref(), Some("612345678"));
        }
    }

    #[test]
    fn mobiles_and_foreign_numbers() {
        let f = forms("3331234567", country("IT"), 9);
        assert_eq!(f.e164.as_deref(), Some("+393331234567"));
        let f = forms("+44 20 7946 0000", country("IT"), 9);
        assert_eq!(f.e164.as_deref(), Some("+442079460000"));
    }

    #[test]
    fn garbage_and_anonymous_do_not_panic() {
        for raw in ["", "anonymous", "<unknown>", "+", "00", "12"] {
            let f = forms(raw, country("IT"), 9);
            assert!(f.e164.is_none() || !f.variants.is_empty());
        }
    }
}
