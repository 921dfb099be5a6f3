//! docs/PROTOCOL.md §7a's table of status codes, read from the document and
//! checked against the one mapping (`tandem_grpc::status::code_of`): every
//! typed error is listed exactly once, under the code it really gets. A new
//! `ProtocolError` variant does not compile here until it is named, and then
//! fails until the table lists it.

use std::collections::BTreeMap;
use tandem_core::{CryptoError, ProtocolError, TicketRefusal};
use tandem_grpc::status::code_of;
use tandem_model::{ModelError, OutputMode};
use tonic::Code;

/// The table's name for an error. No wildcard arm: a new variant must be
/// named before this test compiles.
fn name_of(e: &ProtocolError) -> String {
    match e {
        ProtocolError::Model(m) => format!(
            "Model::{}",
            match m {
                ModelError::Invalid(_) => "Invalid",
                ModelError::File(_) => "File",
                ModelError::UnknownLayer { .. } => "UnknownLayer",
                ModelError::Budget { .. } => "Budget",
                ModelError::InputLength { .. } => "InputLength",
                ModelError::InputOutOfRange { .. } => "InputOutOfRange",
                ModelError::UnsupportedMode { .. } => "UnsupportedMode",
            }
        ),
        ProtocolError::Crypto(c) => format!(
            "Crypto::{}",
            match c {
                CryptoError::InvalidKey(_) => "InvalidKey",
                CryptoError::MalformedCiphertext(_) => "MalformedCiphertext",
                CryptoError::SealedResultRejected => "SealedResultRejected",
                CryptoError::Budget(_) => "Budget",
            }
        ),
        ProtocolError::TicketRefused(r) => format!(
            "TicketRefused::{}",
            match r {
                TicketRefusal::OtherOwner => "OtherOwner",
                TicketRefusal::OtherModel { .. } => "OtherModel",
                TicketRefusal::OtherMode { .. } => "OtherMode",
            }
        ),
        ProtocolError::OutOfOrder { .. } => "OutOfOrder".into(),
        ProtocolError::LengthMismatch { .. } => "LengthMismatch".into(),
        ProtocolError::OutOfRange { .. } => "OutOfRange".into(),
        ProtocolError::Malformed(_) => "Malformed".into(),
        ProtocolError::PeerMisbehaved(_) => "PeerMisbehaved".into(),
        ProtocolError::ReplayedSeed => "ReplayedSeed".into(),
        ProtocolError::UnknownEpoch => "UnknownEpoch".into(),
        ProtocolError::UnknownSeedSession => "UnknownSeedSession".into(),
        ProtocolError::UnknownOtSetup => "UnknownOtSetup".into(),
        ProtocolError::SeedSessionsFull { .. } => "SeedSessionsFull".into(),
        ProtocolError::RingMismatch { .. } => "RingMismatch".into(),
        ProtocolError::UnknownSession => "UnknownSession".into(),
        ProtocolError::StoreFull { .. } => "StoreFull".into(),
        ProtocolError::KeyTooSmall { .. } => "KeyTooSmall".into(),
    }
}

/// One error of every kind `name_of` names.
fn every_error() -> Vec<ProtocolError> {
    let s = || "x".to_string();
    vec![
        ModelError::Invalid(s()).into(),
        ModelError::File(s()).into(),
        ModelError::UnknownLayer { index: 0, kind: s(), supported: "dense" }.into(),
        ModelError::Budget { layer: s(), bits_needed: 300, available: 256 }.into(),
        ModelError::InputLength { expected: 2, got: 3 }.into(),
        ModelError::InputOutOfRange { index: 0, value: 9.0, lo: 0.0, hi: 1.0 }.into(),
        ModelError::UnsupportedMode { mode: s(), available: s() }.into(),
        CryptoError::InvalidKey(s()).into(),
        CryptoError::MalformedCiphertext(s()).into(),
        CryptoError::SealedResultRejected.into(),
        CryptoError::Budget(s()).into(),
        TicketRefusal::OtherOwner.into(),
        TicketRefusal::OtherModel { ticket: s(), asked: s() }.into(),
        TicketRefusal::OtherMode { ticket: OutputMode::Label, asked: OutputMode::Logits }.into(),
        ProtocolError::OutOfOrder { got: "x" },
        ProtocolError::UnknownSeedSession,
        ProtocolError::UnknownOtSetup,
        ProtocolError::SeedSessionsFull { limit: 1 },
        ProtocolError::LengthMismatch { field: "x", expected: 1, got: 2 },
        ProtocolError::OutOfRange { field: "x", got: 1, accepted: s() },
        ProtocolError::Malformed(s()),
        ProtocolError::PeerMisbehaved(s()),
        ProtocolError::ReplayedSeed,
        ProtocolError::UnknownEpoch,
        ProtocolError::RingMismatch { model: 256, code: 128 },
        ProtocolError::UnknownSession,
        ProtocolError::StoreFull { limit: 1 },
        ProtocolError::KeyTooSmall { layer: s(), needed: 3000, key_bits: 2048 },
    ]
}

/// `name → code` from the "core errors" column of §7a.
fn documented() -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
    let start = doc.find("## 7a. Status codes").expect("docs/PROTOCOL.md has §7a");
    let section = &doc[start..];
    let section = &section[..section[4..].find("\n## ").map_or(section.len(), |e| e + 4)];
    let mut map = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let code = cells[1].trim_matches('`').to_string();
        for name in cells[2].split(',').map(|n| n.trim().trim_matches('`')).filter(|n| !n.is_empty()) {
            let old = map.insert(name.to_string(), code.clone());
            assert!(old.is_none(), "§7a lists {name} twice");
        }
    }
    map
}

fn code_name(c: Code) -> String {
    // tonic's Debug names (InvalidArgument) as the document writes them (INVALID_ARGUMENT).
    let mut out = String::new();
    for (i, ch) in format!("{c:?}").chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

#[test]
fn the_documented_status_table_is_the_mapping() {
    let doc = documented();
    let errors = every_error();
    let mut named = std::collections::BTreeSet::new();
    for e in &errors {
        let name = name_of(e);
        let code = code_name(code_of(e));
        assert_eq!(
            doc.get(&name),
            Some(&code),
            "docs/PROTOCOL.md §7a should list {name} under {code} (the code it gets)"
        );
        named.insert(name);
    }
    let extra: Vec<_> = doc.keys().filter(|k| !named.contains(*k)).collect();
    assert!(extra.is_empty(), "§7a lists errors that do not exist: {extra:?}");
}
