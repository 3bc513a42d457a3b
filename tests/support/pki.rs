//! A throwaway PostgreSQL cluster that speaks only TLS, with a certificate
//! authority, server and client certificates generated for the test (rcgen).

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::processes::{Cluster, ClusterSetup, start_cluster};

/// The role that must log in with a client certificate (pg_hba `cert`).
pub const CERT_USER: &str = "certuser";
/// The role that logs in with SCRAM-SHA-256 and [`PASSWORD`] (pg_hba `scram-sha-256`).
pub const PASSWORD_USER: &str = "pwuser";
/// Its password.
pub const PASSWORD: &str = "s3cret-pw-never-printed";

/// PEM files of a test PKI, in a temporary directory removed on drop.
pub struct Pki {
    /// The directory holding the files.
    pub dir: PathBuf,
    /// The CA that signed the server's and the client's certificates.
    pub ca: PathBuf,
    /// A CA that signed nothing of this server's.
    pub wrong_ca: PathBuf,
    /// The client certificate of [`CERT_USER`].
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    server_cert: String,
    server_key: String,
    ca_pem: String,
}

impl Pki {
    /// Generates a CA, a server certificate valid only for `localhost` (not
    /// for 127.0.0.1, so that the address shows a host-name mismatch), a
    /// client certificate for [`CERT_USER`] and an unrelated CA.
    pub fn generate() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "calendar-sync-pki-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        fs::create_dir(&dir).expect("create the PKI directory");
        let ca = authority("calendar-sync test CA");
        let wrong = authority("some other CA");
        let (server_cert, server_key) = leaf(&ca, "localhost", vec!["localhost".into()]);
        let (client_cert, client_key) = leaf(&ca, CERT_USER, vec![]);
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            fs::write(&path, text).expect("write a PEM file");
            path
        };
        Self {
            ca: write("ca.crt", &ca.pem()),
            wrong_ca: write("wrong-ca.crt", &wrong.pem()),
            client_cert: write("client.crt", &client_cert),
            client_key: write("client.key", &client_key),
            ca_pem: ca.pem(),
            server_cert,
            server_key,
            dir,
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}

fn leaf(ca: &CertifiedIssuer<'_, KeyPair>, cn: &str, names: Vec<String>) -> (String, String) {
    let mut params = CertificateParams::new(names).expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, ca).expect("sign the leaf");
    (cert.pem(), key.serialize_pem())
}

/// A cluster that refuses plaintext TCP connections (like RDS 15+, Neon,
/// Heroku, Azure), trusts `postgres` over TLS, and demands a client
/// certificate of [`CERT_USER`].
pub struct TlsCluster {
    /// The cluster (its server runs while this lives).
    pub cluster: Cluster,
    /// The certificates.
    pub pki: Pki,
}

impl TlsCluster {
    /// Starts it; `Ok(None)` when no throwaway cluster can be started here.
    pub async fn start() -> Result<Option<Self>, String> {
        let pki = Pki::generate();
        let setup = ClusterSetup {
            name: "tls".into(),
            files: vec![
                ("server.crt".into(), pki.server_cert.clone()),
                ("server.key".into(), pki.server_key.clone()),
                ("ca.crt".into(), pki.ca_pem.clone()),
            ],
            conf: "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
                   ssl_ca_file = 'ca.crt'\n"
                .into(),
            hba: Some(
                "local all all trust\n\
                 hostssl all certuser 127.0.0.1/32 cert\n\
                 hostssl all certuser ::1/128 cert\n\
                 hostssl all pwuser 127.0.0.1/32 scram-sha-256\n\
                 hostssl all pwuser ::1/128 scram-sha-256\n\
                 hostssl all all 127.0.0.1/32 trust\n\
                 hostssl all all ::1/128 trust\n"
                    .into(),
            ),
        };
        let Some(cluster) = tokio::task::spawn_blocking(move || start_cluster(&setup))
            .await
            .map_err(|e| e.to_string())??
        else {
            return Ok(None);
        };
        let this = Self { cluster, pki };
        let admin = this.admin().await;
        admin
            .batch_execute(&format!(
                "CREATE ROLE {CERT_USER} LOGIN; \
                 SET password_encryption = 'scram-sha-256'; \
                 CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{PASSWORD}'; \
                 GRANT ALL ON SCHEMA public TO {PASSWORD_USER}"
            ))
            .await
            .map_err(|e| format!("create role: {e}"))?;
        Ok(Some(this))
    }

    /// A superuser session over the Unix socket (pg_hba `local trust`).
    pub async fn admin(&self) -> tokio_postgres::Client {
        crate::processes::connect(&self.socket_config()).await
    }

    /// Settings of a superuser session over the Unix socket (for helpers that
    /// connect in plaintext, such as `wait_until`).
    pub fn socket_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.cluster.dir())
            .port(self.cluster.port())
            .user("postgres")
            .dbname("postgres");
        config
    }

    /// `postgres://USER@HOST:PORT/postgres?PARAMS`.
    pub fn url(&self, host: &str, user: &str, params: &str) -> String {
        let port = self.cluster.port();
        format!("postgres://{user}@{host}:{port}/postgres?{params}")
    }

    /// `sslrootcert=PATH` of a CA file, for URLs.
    pub fn root(path: &Path) -> String {
        format!("sslrootcert={}", path.display())
    }
}
