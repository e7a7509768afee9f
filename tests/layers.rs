//! The tree's layers (DESIGN.md section 2, docs/ARCHITECTURE.md): imports
//! run one way, from the server wiring down to `limits`. This test reads
//! every source file and fails on an import that goes up or sideways, so
//! the shape stays as the tree grows.
//!
//! A new top-level module must be placed in [`LAYERS`] before it builds
//! green: the test refuses modules it does not know.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module of `src/` and the modules it may import.
const LAYERS: &[(&str, &[&str])] = &[
    // The bottom: bounds, wire types, stream adapters, process setup.
    ("limits", &[]),
    ("proto", &[]),
    ("net", &["limits"]),
    ("runtime", &[]),
    ("gzip", &[]),
    // TLS under every connection: configurations, handshakes, the stream.
    ("tls", &["limits", "net", "runtime"]),
    // Pure byte formats.
    ("codec", &["limits", "proto"]),
    ("index", &["codec", "limits", "proto"]),
    ("shard", &["index", "codec", "limits", "proto"]),
    // The shippers' protocols, decoded: pure.
    ("ingest", &["gzip", "codec", "limits", "proto"]),
    // The transport knows no wormdb service, and no storage.
    ("grpc", &["gzip", "limits", "net", "tls", "proto"]),
    // Features over storage and transport.
    ("query", &["shard", "index", "codec", "limits", "proto"]),
    ("replication", &["grpc", "shard", "index", "codec", "limits", "proto", "net"]),
    ("config", &["ingest", "shard", "limits", "tls"]),
    // Who may call, and how much: pure decisions over identities.
    ("auth", &["net", "limits"]),
    // The archive tier: Raft groups over the replication rules (and the
    // data directory's lock, which its offline recovery takes).
    ("tier", &["replication", "grpc", "shard", "index", "codec", "limits", "proto", "net", "runtime"]),
    // One core's state; it names no front door.
    (
        "node",
        &["ingest", "tier", "query", "replication", "config", "shard", "index", "codec", "limits", "proto", "runtime"],
    ),
    // The front doors.
    (
        "http",
        &[
            "auth",
            "ingest",
            "node",
            "tier",
            "query",
            "replication",
            "config",
            "shard",
            "index",
            "codec",
            "limits",
            "proto",
            "net",
            "tls",
        ],
    ),
    (
        "services",
        &[
            "auth",
            "ingest",
            "node",
            "tier",
            "query",
            "replication",
            "grpc",
            "config",
            "shard",
            "index",
            "codec",
            "limits",
            "proto",
            "net",
            "tls",
        ],
    ),
    // Syslog over TCP and UDP: sockets, framing and storing, no HTTP.
    ("syslog", &["auth", "ingest", "node", "shard", "limits"]),
    // Tools over storage.
    ("inspect", &["shard", "index", "codec", "limits"]),
    // The wiring at the top imports anything; nothing imports it.
    (
        "server",
        &[
            "auth",
            "services",
            "http",
            "syslog",
            "ingest",
            "node",
            "tier",
            "query",
            "replication",
            "grpc",
            "config",
            "shard",
            "index",
            "codec",
            "limits",
            "proto",
            "net",
            "tls",
            "runtime",
        ],
    ),
];

/// Modules any layer's unit tests may use: `loghub` locates the sample logs
/// (`tests/common/loghub.rs`, compiled into the crate for tests only).
const TEST_SUPPORT: &[&str] = &["loghub"];

/// Files that are not part of a layer: the crate root and the binary.
const ROOTS: &[&str] = &["lib.rs", "main.rs"];

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("under src");
    let first = relative.components().next().expect("non-empty").as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_owned()
}

/// Every `crate::NAME` a file refers to outside comments.
fn crate_references(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let code = match line.find("//") {
            Some(comment) => &line[..comment],
            None => line,
        };
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let preceded_by_ident = rest[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_');
            let tail = &rest[at + "crate::".len()..];
            let name: String = tail.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if !preceded_by_ident && !name.is_empty() {
                names.insert(name);
            }
            rest = tail;
        }
    }
    names
}

/// The violations in a tree: (file, module, imported module).
fn violations(src: &Path) -> Vec<String> {
    let layers: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut files = Vec::new();
    source_files(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let name = file.file_name().expect("file name").to_string_lossy().into_owned();
        if file.parent() == Some(src) && ROOTS.contains(&name.as_str()) {
            continue;
        }
        let module = module_of(src, &file);
        let Some(allowed) = layers.get(module.as_str()) else {
            found.push(format!("{}: module `{module}` is in no layer of tests/layers.rs", file.display()));
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read source");
        for imported in crate_references(&text) {
            if imported != module && !allowed.contains(&imported.as_str()) && !TEST_SUPPORT.contains(&imported.as_str())
            {
                found
                    .push(format!("{}: `{module}` imports `crate::{imported}`, which is not below it", file.display()));
            }
        }
    }
    found
}

#[test]
fn imports_run_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(found.is_empty(), "imports against the layers:\n{}", found.join("\n"));
}

#[test]
fn an_upward_import_is_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("shard")).expect("mkdir");
    std::fs::write(src.join("lib.rs"), "pub mod shard;\n").expect("write");
    std::fs::write(src.join("shard/mod.rs"), "use crate::node::Core; // the shard must not see the node\n")
        .expect("write");
    std::fs::write(src.join("shard/ok.rs"), "// crate::http in a comment is fine\nuse crate::codec::block;\n")
        .expect("write");
    std::fs::write(src.join("mystery.rs"), "use crate::limits;\n").expect("write");
    let found = violations(&src);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].contains("`mystery` is in no layer"), "{found:#?}");
    assert!(found[1].contains("`shard` imports `crate::node`"), "{found:#?}");
}

#[test]
fn references_are_found_in_paths_and_use_lists() {
    let names = crate_references(
        "use crate::codec::{self, block};\nfn f() { crate::limits::check(); }\nlet x = mycrate::node;",
    );
    assert_eq!(names.into_iter().collect::<Vec<_>>(), vec!["codec".to_owned(), "limits".to_owned()]);
}
