//! Who a verified client certificate names: its DNS SANs (or, when it has
//! none, its subject's CN) read as a [`crate::net::Identity`]
//! (`follower-<id>`, `node-<id>`, anything else).
//!
//! rustls has verified the certificate against `--tls-client-ca` by the
//! time this runs; this only reads names. The rule, as a pure function of
//! the names ([`identity_of_names`]):
//!
//! - the DNS SANs are the names; the CN counts only when there is no DNS
//!   SAN (as in hostname verification, RFC 6125);
//! - a name that stands for a role (`follower-7`, `node-2`) wins over the
//!   others, so a member's certificate may also carry host names;
//! - names for two different roles make the certificate stand for none
//!   ([`Identity::Other`], with its first name): a CA that signs such a
//!   certificate has made a mistake, and no role is the safe reading.

use crate::net::Identity;

/// The identity a certificate with these DNS SANs and this CN stands for;
/// `None` when it names nothing.
pub fn identity_of_names(dns_names: &[&str], common_name: Option<&str>) -> Option<Identity> {
    let names: Vec<&str> = match (dns_names.is_empty(), common_name) {
        (false, _) => dns_names.to_vec(),
        (true, Some(name)) => vec![name],
        (true, None) => return None,
    };
    let first = *names.first()?;
    let mut role = None;
    for name in &names {
        let identity = Identity::from_name(name);
        if matches!(identity, Identity::Other(_)) {
            continue;
        }
        match &role {
            None => role = Some(identity),
            Some(earlier) if *earlier == identity => {}
            Some(_) => return Some(Identity::Other(first.to_string())),
        }
    }
    Some(role.unwrap_or_else(|| Identity::Other(first.to_string())))
}

/// The identity the DER certificate `der` stands for; `None` when it
/// cannot be parsed or names nothing.
pub fn identity_of_certificate(der: &[u8]) -> Option<Identity> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = certificate.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(name) = name {
                dns_names.push(*name);
            }
        }
    }
    let common_name = certificate.subject().iter_common_name().next().and_then(|name| name.as_str().ok());
    identity_of_names(&dns_names, common_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn san_names_win_over_the_common_name() {
        assert_eq!(identity_of_names(&["follower-7"], Some("node-1")), Some(Identity::Follower(7)));
        assert_eq!(identity_of_names(&[], Some("node-3")), Some(Identity::Node(3)));
        assert_eq!(identity_of_names(&["ops.example"], Some("node-3")), Some(Identity::Other("ops.example".into())));
        assert_eq!(identity_of_names(&[], None), None);
    }

    #[test]
    fn a_role_name_wins_over_host_names_but_two_roles_are_none() {
        assert_eq!(identity_of_names(&["db1.example", "node-2"], None), Some(Identity::Node(2)));
        assert_eq!(identity_of_names(&["node-2", "node-2"], None), Some(Identity::Node(2)));
        assert_eq!(
            identity_of_names(&["follower-1", "follower-2"], None),
            Some(Identity::Other("follower-1".into())),
            "two roles: none"
        );
        assert_eq!(identity_of_names(&["node-1", "follower-1"], None), Some(Identity::Other("node-1".into())));
    }

    #[test]
    fn certificates_are_read_from_der() {
        let read = |name: &str| {
            let path = format!("{}/tests/fixtures/tls/{name}.pem", env!("CARGO_MANIFEST_DIR"));
            let pem = std::fs::read(path).unwrap();
            use rustls::pki_types::pem::PemObject;
            let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
            identity_of_certificate(&der)
        };
        assert_eq!(read("follower-7"), Some(Identity::Follower(7)));
        assert_eq!(read("node-3"), Some(Identity::Node(3)));
        assert_eq!(read("cn-only"), Some(Identity::Follower(9)), "the CN when there is no DNS SAN");
        assert_eq!(read("server"), Some(Identity::Other("localhost".into())));
        assert_eq!(identity_of_certificate(b"not a certificate"), None);
    }
}
