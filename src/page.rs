//! Page tokens of the listing RPCs (`page_token` / `next_page_token`): opaque to
//! clients (hex, so nobody is tempted to build one), a position to the server.

use crate::error::{Error, Result};
use crate::validate::Limits;

/// Items per page of a listing rpc when the request's page_size is 0 (the
/// proto says so for each); at most --max-batch either way.
const DEFAULT_SIZE: u32 = 100;

/// The page a listing request asks for: at most `size` items after `after`
/// (None: from the start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Most items to return.
    pub size: usize,
    /// The position the page starts after.
    pub after: Option<String>,
}

impl Page {
    /// Reads a request's `page_size` (0: [`DEFAULT_SIZE`], at most
    /// --max-batch) and `page_token`; INVALID_ARGUMENT naming the field at
    /// fault.
    pub fn of(limits: &Limits, page_size: u32, page_token: &str) -> Result<Self> {
        Ok(Self {
            size: limits.count("page_size", page_size, DEFAULT_SIZE)?,
            after: position("page_token", page_token)?,
        })
    }
}

/// The token that resumes a listing after `position`.
pub fn token(position: &str) -> String {
    position.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The `next_page_token` of a page of names: after its last name, when `more`
/// follow.
pub fn next_after(names: &[String], more: bool) -> String {
    next_token(names.last().map(String::as_str), more)
}

/// The `next_page_token` of a page whose last item is at position `last`,
/// when `more` follow.
pub fn next_token(last: Option<&str>, more: bool) -> String {
    match last {
        Some(last) if more => token(last),
        _ => String::new(),
    }
}

/// The page of at most `size` items of `sorted` (in the order of `key`) that
/// come after the position `after`, and whether more follow.
pub fn slice<T>(
    mut sorted: Vec<T>,
    key: impl Fn(&T) -> &str,
    after: Option<&str>,
    size: usize,
) -> (Vec<T>, bool) {
    let first = after.map_or(0, |after| sorted.partition_point(|item| key(item) <= after));
    let mut page = sorted.split_off(first.min(sorted.len()));
    let more = page.len() > size;
    page.truncate(size);
    (page, more)
}

/// The position a `page_token` from [`token`] resumes after; `None` for the
/// first page (an empty token).
pub fn position(field: &str, token: &str) -> Result<Option<String>> {
    if token.is_empty() {
        return Ok(None);
    }
    let refuse = || Error::invalid(field, "is not a page token this server gave out");
    if !token.len().is_multiple_of(2) {
        return Err(refuse());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(token.get(i..i + 2).ok_or_else(refuse)?, 16).map_err(|_| refuse())
        })
        .collect::<Result<Vec<u8>>>()?;
    String::from_utf8(bytes).map(Some).map_err(|_| refuse())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_gives_back_its_position() {
        for position in ["", "mail", "1700000000000/job:7", "ünïcode"] {
            let back = super::position("page_token", &token(position)).expect("valid");
            let expected = (!position.is_empty()).then(|| position.to_owned());
            assert_eq!(back, expected);
        }
    }

    #[test]
    fn a_slice_resumes_after_its_position() {
        let names: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let key = String::as_str;
        assert_eq!(
            slice(names.clone(), key, None, 2),
            (vec!["a".into(), "b".into()], true)
        );
        assert_eq!(
            slice(names.clone(), key, Some("b"), 2),
            (vec!["c".into(), "d".into()], false)
        );
        assert_eq!(
            slice(names.clone(), key, Some("bb"), 5),
            (vec!["c".into(), "d".into()], false)
        );
        assert_eq!(slice(names, key, Some("z"), 2), (vec![], false));
    }

    #[test]
    fn a_token_we_did_not_make_is_invalid_naming_the_field() {
        for bad in ["xyz", "abc", "ff"] {
            let err = position("page_token", bad).expect_err(bad);
            assert!(err.to_string().starts_with("page_token: "), "{err}");
        }
    }
}
