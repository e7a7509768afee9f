//! Query-string parsing for `GET /v1/entries` and `GET /v1/tail`. Pure.

use crate::index::words::WordQuery;
use crate::limits::{
    QUERY_CONTAINS_MAX, QUERY_FIELDS_MAX, QUERY_LIMIT_DEFAULT, QUERY_LIMIT_MAX, QUERY_TAGS_MAX, QUERY_WORDS_MAX,
};
use crate::shard::Substrings;

/// A parsed query string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryParams {
    /// `from` (inclusive, ns); default: the beginning of time.
    pub from_ts: i64,
    /// `to` (exclusive, ns); default: the end of time.
    pub to_ts: i64,
    /// Every `tag=k=v`, in order.
    pub tags: Vec<(String, String)>,
    /// Every `field=k=v`, in order: exact predicates on entry fields.
    pub fields: Vec<(String, String)>,
    /// `limit`.
    pub limit: usize,
    /// `direction=backward`.
    pub backward: bool,
    /// Every `q=` (whole words of the body, all required).
    pub words: WordQuery,
    /// Every `contains=` (exact substrings of the body, all required).
    pub contains: Substrings,
}

pub(super) fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(index + 1..index + 3).ok_or_else(|| format!("bad percent escape in {text:?}"))?;
                let hex = std::str::from_utf8(hex).map_err(|_| format!("bad percent escape in {text:?}"))?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad percent escape in {text:?}"))?);
                index += 2;
            }
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8 once decoded"))
}

/// Parses `from`, `to`, `tag` and `field` (repeated, `k=v`), `limit`,
/// `direction`, `q` and `contains` (repeated).
/// `allowed` names the parameters this endpoint takes; others are refused.
pub fn parse(query: Option<&str>, allowed: &[&str]) -> Result<QueryParams, String> {
    let mut params = QueryParams {
        from_ts: i64::MIN,
        to_ts: i64::MAX,
        tags: Vec::new(),
        fields: Vec::new(),
        limit: QUERY_LIMIT_DEFAULT,
        backward: false,
        words: WordQuery::default(),
        contains: Substrings::default(),
    };
    let mut words: Vec<String> = Vec::new();
    let mut contains: Vec<String> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name)?;
        let value = percent_decode(value)?;
        if !allowed.contains(&name.as_str()) {
            return Err(format!("unknown parameter {name:?} (this endpoint takes: {})", allowed.join(", ")));
        }
        match name.as_str() {
            "from" => {
                params.from_ts = value.parse().map_err(|_| format!("from={value:?}: expected integer nanoseconds"))?
            }
            "to" => params.to_ts = value.parse().map_err(|_| format!("to={value:?}: expected integer nanoseconds"))?,
            "limit" => {
                let limit: usize =
                    value.parse().map_err(|_| format!("limit={value:?}: expected a positive integer"))?;
                if limit == 0 || limit > QUERY_LIMIT_MAX {
                    return Err(format!("limit={limit}: must be between 1 and {QUERY_LIMIT_MAX}"));
                }
                params.limit = limit;
            }
            "direction" => {
                params.backward = match value.as_str() {
                    "forward" => false,
                    "backward" => true,
                    _ => return Err(format!("direction={value:?}: expected forward or backward")),
                }
            }
            "tag" => push_predicate(&mut params.tags, "tag", &value, QUERY_TAGS_MAX)?,
            "field" => push_predicate(&mut params.fields, "field", &value, QUERY_FIELDS_MAX)?,
            // Bounded by the parsers below; the count first, so a query
            // string of a million `q=` holds no more than the limits.
            "q" => {
                if words.len() == QUERY_WORDS_MAX {
                    return Err(format!("more than {QUERY_WORDS_MAX} q= values"));
                }
                words.push(value)
            }
            "contains" => {
                if contains.len() == QUERY_CONTAINS_MAX {
                    return Err(format!("more than {QUERY_CONTAINS_MAX} contains= values"));
                }
                contains.push(value)
            }
            _ => unreachable!("checked against allowed"),
        }
    }
    params.words = WordQuery::parse(words.iter().map(String::as_str)).map_err(|error| error.to_string())?;
    params.contains = Substrings::parse(contains.iter().map(String::as_str)).map_err(|error| error.to_string())?;
    if params.from_ts > params.to_ts {
        return Err(format!("from={} is after to={}", params.from_ts, params.to_ts));
    }
    Ok(params)
}

/// Adds `NAME=key=value`'s predicate to `predicates`, at most `max` of them.
fn push_predicate(predicates: &mut Vec<(String, String)>, name: &str, value: &str, max: usize) -> Result<(), String> {
    let (key, predicate_value) =
        value.split_once('=').ok_or_else(|| format!("{name}={value:?}: expected {name}=key=value"))?;
    if key.is_empty() {
        return Err(format!("{name}={value:?}: empty key"));
    }
    if predicates.len() == max {
        return Err(format!("more than {max} {name} predicates"));
    }
    predicates.push((key.to_owned(), predicate_value.to_owned()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[&str] = &["from", "to", "tag", "limit", "direction", "q", "contains"];

    #[test]
    fn parses_every_parameter() {
        let params =
            parse(Some("from=10&to=20&tag=app=web%3D1&tag=level=error&limit=5&direction=backward"), ALL).unwrap();
        assert_eq!(params.from_ts, 10);
        assert_eq!(params.to_ts, 20);
        assert_eq!(params.tags, vec![("app".into(), "web=1".into()), ("level".into(), "error".into())]);
        assert_eq!(params.limit, 5);
        assert!(params.backward);
        let defaults = parse(None, ALL).unwrap();
        assert_eq!(
            (defaults.from_ts, defaults.to_ts, defaults.limit, defaults.backward),
            (i64::MIN, i64::MAX, 1000, false)
        );
    }

    #[test]
    fn refuses_bad_input_with_the_parameter_named() {
        for (query, needle) in [
            ("from=yesterday", "from="),
            ("limit=0", "limit="),
            ("limit=10000001", "limit="),
            ("direction=up", "direction="),
            ("tag=novalue", "tag="),
            ("tag==v", "empty key"),
            ("color=red", "unknown parameter"),
            ("from=5&to=4", "after"),
            ("tag=a%zz", "percent"),
            ("q=--", "no word"),
            ("q=&tag=a=b", "no word"),
            ("contains=", "empty"),
            ("contains=a&contains=", "empty"),
        ] {
            let error = parse(Some(query), ALL).unwrap_err();
            assert!(error.contains(needle), "{query}: {error}");
        }
        assert!(parse(Some("limit=5"), &["tag"]).is_err());
        let long_word = format!("q={}", "w".repeat(crate::limits::QUERY_WORD_BYTES_MAX + 1));
        assert!(parse(Some(&long_word), ALL).unwrap_err().contains("bytes long"));
        let long_text = format!("contains={}", "c".repeat(crate::limits::QUERY_CONTAINS_BYTES_MAX + 1));
        assert!(parse(Some(&long_text), ALL).unwrap_err().contains("bytes long"));
        let many_words: Vec<String> = (0..=crate::limits::QUERY_WORDS_MAX).map(|index| format!("q=w{index}")).collect();
        assert!(parse(Some(&many_words.join("&")), ALL).unwrap_err().contains("q="));
        let many_texts: Vec<String> =
            (0..=crate::limits::QUERY_CONTAINS_MAX).map(|index| format!("contains=c{index}")).collect();
        assert!(parse(Some(&many_texts.join("&")), ALL).unwrap_err().contains("contains="));
    }

    #[test]
    fn parses_words_and_substrings() {
        let params = parse(Some("q=Error&q=blk_42+refused&contains=10.0.0.1%3A80&contains=a%26b"), ALL).unwrap();
        let words: Vec<&[u8]> = params.words.words().collect();
        assert_eq!(words, vec![&b"error"[..], b"blk_42", b"refused"]);
        let needles: Vec<&[u8]> = params.contains.needles().collect();
        assert_eq!(needles, vec![&b"10.0.0.1:80"[..], b"a&b"]);
        let none = parse(None, ALL).unwrap();
        assert!(none.words.is_empty() && none.contains.is_empty());
    }
}
