//! Certificates for the TLS tests, made with the real `openssl` CLI and the
//! same commands `docs/security.md` shows: a CA, a server certificate
//! for 127.0.0.1, `follower-<id>` and `node-<id>` certificates signed by
//! it, and a second, unrelated CA that signs strangers.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A certificate and its key.
#[derive(Clone, Debug)]
pub struct Pair {
    /// The PEM certificate.
    pub cert: PathBuf,
    /// The PEM private key.
    pub key: PathBuf,
}

impl Pair {
    /// `--tls-cert CERT --tls-key KEY`, as arguments.
    pub fn args(&self) -> Vec<String> {
        vec!["--tls-cert".into(), path(&self.cert), "--tls-key".into(), path(&self.key)]
    }
}

/// A path as an argument.
pub fn path(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

/// Runs `openssl ARGS` in `dir`; panics with its output on failure.
pub fn openssl(dir: &Path, args: &[&str]) -> std::process::Output {
    let output = Command::new("openssl").current_dir(dir).args(args).output().expect("the openssl CLI is installed");
    assert!(
        output.status.success(),
        "openssl {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Two CAs in a directory, and the certificates they issue.
pub struct Pki {
    /// Where every file is.
    pub dir: PathBuf,
    /// The CA nodes and followers trust (`--tls-client-ca`, `--peer-ca`).
    pub ca: PathBuf,
    /// A CA nobody trusts.
    pub other_ca: PathBuf,
}

impl Pki {
    /// Makes both CAs in `dir`, and [`Pki::client`]'s certificate.
    pub fn new(dir: &Path) -> Pki {
        make_ca(dir, "ca");
        make_ca(dir, "other-ca");
        issue(dir, "ca", "client", "client", "DNS:client");
        Pki { dir: dir.to_path_buf(), ca: dir.join("ca.pem"), other_ca: dir.join("other-ca.pem") }
    }

    /// The certificate of a plain client (`client`: neither a follower nor
    /// a member): with mutual TLS and no tokens it may write, read and
    /// read metrics (DESIGN.md section 10).
    pub fn client(&self) -> Pair {
        client_of(&self.ca)
    }

    /// A server certificate for 127.0.0.1 (and `localhost`), named `file`.
    pub fn server(&self, file: &str) -> Pair {
        issue(&self.dir, "ca", file, "localhost", "DNS:localhost, IP:127.0.0.1")
    }

    /// `follower-<id>`'s certificate (client only: it serves nothing to peers).
    pub fn follower(&self, id: u32) -> Pair {
        let name = format!("follower-{id}");
        issue(&self.dir, "ca", &name, &name, &format!("DNS:{name}, IP:127.0.0.1"))
    }

    /// `node-<id>`'s certificate: its client identity and its server
    /// certificate for 127.0.0.1.
    pub fn node(&self, id: u32) -> Pair {
        let name = format!("node-{id}");
        issue(&self.dir, "ca", &name, &name, &format!("DNS:{name}, IP:127.0.0.1"))
    }

    /// A certificate named `name` from the other CA.
    pub fn stranger(&self, name: &str) -> Pair {
        issue(&self.dir, "other-ca", &format!("stranger-{name}"), name, &format!("DNS:{name}, IP:127.0.0.1"))
    }

    /// `name`'s certificate from the trusted CA that expired in 2020
    /// (`openssl ca` with explicit dates: `x509 -req` cannot backdate).
    pub fn expired(&self, name: &str) -> Pair {
        let dir = &self.dir;
        let config = "[ca]\ndefault_ca = ca\n[ca]\ndatabase = expired-index.txt\nnew_certs_dir = .\n\
                      serial = expired-serial\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n";
        std::fs::write(dir.join("expired-ca.cnf"), config).unwrap();
        std::fs::write(dir.join("expired-index.txt"), "").unwrap();
        std::fs::write(dir.join("expired-serial"), "1000\n").unwrap();
        let file = format!("expired-{name}");
        request(dir, &file, name, &format!("DNS:{name}, IP:127.0.0.1"));
        openssl(
            dir,
            &[
                "ca",
                "-batch",
                "-notext",
                "-config",
                "expired-ca.cnf",
                "-cert",
                "ca.pem",
                "-keyfile",
                "ca.key",
                "-in",
                &format!("{file}.csr"),
                "-out",
                &format!("{file}.pem"),
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20200102000000Z",
                "-extfile",
                &format!("{file}.ext"),
            ],
        );
        Pair { cert: dir.join(format!("{file}.pem")), key: dir.join(format!("{file}.key")) }
    }

    /// A new certificate for 127.0.0.1 (a new key, a new serial) written over
    /// `pair`'s files: a rotation.
    pub fn rotate(&self, pair: &Pair) {
        let fresh = self.server("rotated");
        std::fs::copy(&fresh.cert, &pair.cert).unwrap();
        std::fs::copy(&fresh.key, &pair.key).unwrap();
    }
}

/// The [`Pki::client`] certificate made beside the CA file `ca`.
pub fn client_of(ca: &Path) -> Pair {
    let dir = ca.parent().unwrap();
    Pair { cert: dir.join("client.pem"), key: dir.join("client.key") }
}

/// `openssl req -x509`: a self-signed CA `NAME.pem`, key `NAME.key`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            &format!("/CN=wormdb test {name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// A key and a CSR, then the certificate `FILE.pem` signed by `ca` with
/// subject CN `common_name` and subjectAltName `san`.
fn issue(dir: &Path, ca: &str, file: &str, common_name: &str, san: &str) -> Pair {
    request(dir, file, common_name, san);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{file}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-days",
            "30",
            "-extfile",
            &format!("{file}.ext"),
            "-out",
            &format!("{file}.pem"),
        ],
    );
    Pair { cert: dir.join(format!("{file}.pem")), key: dir.join(format!("{file}.key")) }
}

/// A key `FILE.key`, a CSR `FILE.csr` for subject CN `common_name`, and the
/// extensions `FILE.ext` of a certificate for both roles (server and
/// client), with subjectAltName `san`.
fn request(dir: &Path, file: &str, common_name: &str, san: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={common_name}"),
            "-keyout",
            &format!("{file}.key"),
            "-out",
            &format!("{file}.csr"),
        ],
    );
    let extensions = format!(
        "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = \
         serverAuth, clientAuth\nsubjectAltName = {san}\n"
    );
    std::fs::write(dir.join(format!("{file}.ext")), extensions).unwrap();
}

/// The serial number of a PEM certificate, as `openssl x509 -serial` prints it.
pub fn serial(pem: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(pem).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "not a certificate: {}", String::from_utf8_lossy(pem));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// The serial of the certificate in the file `pem`.
pub fn serial_of_file(pem: &Path) -> String {
    serial(&std::fs::read(pem).unwrap())
}
