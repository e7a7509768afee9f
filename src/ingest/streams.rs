//! A decoded request whose entries share their stream's tags, as Loki
//! pushes (and OTLP resources) group them: the form the shard appends
//! without copying a tag per entry.
//!
//! Decoding into owned [`LogEntry`]s clones a stream's tag map into every
//! entry, and the append then borrows it back: for 1,000 one-line entries
//! that is thousands of allocations the NDJSON path never makes. Here each
//! stream's tags are held once, bodies stay slices of the request's
//! buffer, and [`Streams::with_entry_refs`] lends the shard borrowed
//! [`EntryRef`]s, as NDJSON does.

use bytes::Bytes;

use crate::codec::block::EntryRef;
use crate::proto::LogEntry;

/// One stream: its tags, and its entries in the order sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stream {
    /// The stream's tags, each key once.
    pub tags: Vec<(String, String)>,
    /// Its entries.
    pub entries: Vec<StreamEntry>,
}

/// One entry of a [`Stream`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamEntry {
    /// Nanoseconds since the epoch.
    pub timestamp_ns: i64,
    /// The body.
    pub body: Bytes,
    /// Its fields, each key once (empty for most: no allocation).
    pub fields: Vec<(String, String)>,
}

/// The streams of one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Streams {
    /// In the order sent.
    pub streams: Vec<Stream>,
}

impl Streams {
    /// How many entries, over every stream.
    pub fn len(&self) -> usize {
        self.streams.iter().map(|stream| stream.entries.len()).sum()
    }

    /// Whether there is no entry at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `append` with every entry borrowed, stream after stream.
    pub fn with_entry_refs<T>(&self, append: impl FnOnce(&[EntryRef<'_>]) -> T) -> T {
        let tags: Vec<Vec<(&str, &str)>> = self
            .streams
            .iter()
            .map(|stream| stream.tags.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect())
            .collect();
        let mut fields: Vec<Vec<(&str, &str)>> = Vec::with_capacity(self.len());
        for entry in self.streams.iter().flat_map(|stream| &stream.entries) {
            fields.push(entry.fields.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect());
        }
        let mut refs = Vec::with_capacity(fields.len());
        let mut entry_fields = fields.iter();
        for (stream, tags) in self.streams.iter().zip(&tags) {
            for (entry, fields) in stream.entries.iter().zip(entry_fields.by_ref()) {
                refs.push(EntryRef { timestamp_ns: entry.timestamp_ns, tags, body: &entry.body, fields });
            }
        }
        append(&refs)
    }

    /// The entries as owned [`LogEntry`]s (for a tier member, which
    /// proposes owned entries to its group).
    pub fn into_log_entries(self) -> Vec<LogEntry> {
        let mut entries = Vec::with_capacity(self.len());
        for stream in self.streams {
            let tags: std::collections::BTreeMap<String, String> = stream.tags.into_iter().collect();
            for entry in stream.entries {
                entries.push(LogEntry {
                    timestamp_ns: entry.timestamp_ns,
                    tags: tags.clone(),
                    body: entry.body,
                    fields: entry.fields.into_iter().collect(),
                    ..LogEntry::default()
                });
            }
        }
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry as the test compares it: time, sorted tags, body, sorted fields.
    type Flat = (i64, Vec<(String, String)>, Vec<u8>, Vec<(String, String)>);

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
    }

    fn sample() -> Streams {
        let entry = |ts: i64, body: &'static str, fields: &[(&str, &str)]| StreamEntry {
            timestamp_ns: ts,
            body: Bytes::from_static(body.as_bytes()),
            fields: pairs(fields),
        };
        Streams {
            streams: vec![
                Stream {
                    tags: pairs(&[("job", "api"), ("host", "a")]),
                    entries: vec![entry(1, "one", &[("trace_id", "ab")]), entry(2, "two", &[])],
                },
                Stream { tags: Vec::new(), entries: Vec::new() },
                Stream { tags: pairs(&[("job", "db")]), entries: vec![entry(3, "three", &[])] },
            ],
        }
    }

    #[test]
    fn entry_refs_and_owned_entries_agree_in_order() {
        let streams = sample();
        assert_eq!(streams.len(), 3);
        let borrowed: Vec<Flat> = streams.with_entry_refs(|refs| {
            refs.iter()
                .map(|entry| {
                    let own = |items: &[(&str, &str)]| {
                        let mut owned: Vec<(String, String)> =
                            items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                        owned.sort();
                        owned
                    };
                    (entry.timestamp_ns, own(entry.tags), entry.body.to_vec(), own(entry.fields))
                })
                .collect()
        });
        let owned: Vec<_> = streams
            .into_log_entries()
            .into_iter()
            .map(|entry| {
                (
                    entry.timestamp_ns,
                    entry.tags.into_iter().collect(),
                    entry.body.to_vec(),
                    entry.fields.into_iter().collect(),
                )
            })
            .collect();
        assert_eq!(borrowed, owned);
        assert_eq!(borrowed[0].3, pairs(&[("trace_id", "ab")]));
        assert_eq!(borrowed[2].1, pairs(&[("job", "db")]));
        assert!(Streams::default().is_empty());
    }
}
