//! TLS to PostgreSQL with libpq's meaning of `sslmode`, against a throwaway
//! cluster that refuses plaintext, with a CA and certificates made here.

use calendar_sync::Database;
use calendar_sync_tests::{CERT_USER, TlsCluster};

/// Starts the TLS cluster, or skips the test where none can be started.
async fn cluster(test: &str) -> Option<TlsCluster> {
    let started = TlsCluster::start().await.expect("start a TLS cluster");
    if started.is_none() {
        println!("SKIPPED {test}: no initdb/pg_ctl (or no postgres OS user to run them as root)");
    }
    started
}

/// Whether the pool's and a dedicated session of `url` are encrypted; the
/// error text when connecting fails.
async fn sessions_encrypted(url: &str) -> Result<(bool, bool), String> {
    let db = Database::connect(url, 2).map_err(|e| e.to_string())?;
    let query = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let pooled = db.client().await.map_err(|e| e.to_string())?;
    let pooled: bool = pooled.query_one(query, &[]).await.unwrap().get(0);
    let dedicated = db.dedicated().await.map_err(|e| e.to_string())?;
    let dedicated: bool = dedicated.query_one(query, &[]).await.unwrap().get(0);
    Ok((pooled, dedicated))
}

async fn encrypted(url: &str) -> bool {
    match sessions_encrypted(url).await {
        Ok((pooled, dedicated)) => {
            assert_eq!(pooled, dedicated, "{url}");
            pooled
        }
        Err(e) => panic!("{url} should connect: {e}"),
    }
}

async fn refused(url: &str) -> String {
    match sessions_encrypted(url).await {
        Ok(_) => panic!("{url} should be refused"),
        Err(e) => {
            println!("refused as it should: {e}");
            e
        }
    }
}

#[tokio::test]
async fn sslmode_require_encrypts_and_migrates() {
    let Some(c) = cluster("sslmode_require_encrypts_and_migrates").await else {
        return;
    };
    let url = c.url("127.0.0.1", "postgres", "sslmode=require");
    assert!(encrypted(&url).await);
    let db = Database::connect(&url, 2).unwrap();
    assert!(calendar_sync::migrate(&db).await.unwrap() > 0);
}

#[tokio::test]
async fn prefer_the_default_really_uses_tls_and_allow_falls_back_to_it() {
    let Some(c) = cluster("prefer_the_default_really_uses_tls").await else {
        return;
    };
    assert!(encrypted(&c.url("127.0.0.1", "postgres", "")).await);
    assert!(encrypted(&c.url("127.0.0.1", "postgres", "sslmode=prefer")).await);
    // This server refuses plaintext: `allow` tries it first, then TLS.
    assert!(encrypted(&c.url("127.0.0.1", "postgres", "sslmode=allow")).await);
    let e = refused(&c.url("127.0.0.1", "postgres", "sslmode=disable")).await;
    assert!(e.contains("no encryption"), "PostgreSQL's own reason: {e}");
}

#[tokio::test]
async fn verify_full_checks_the_chain_and_the_host_name() {
    let Some(c) = cluster("verify_full_checks_the_chain_and_the_host_name").await else {
        return;
    };
    let right = TlsCluster::root(&c.pki.ca);
    let wrong = TlsCluster::root(&c.pki.wrong_ca);
    let full =
        |host: &str, root: &str| c.url(host, "postgres", &format!("sslmode=verify-full&{root}"));
    assert!(encrypted(&full("localhost", &right)).await);
    let e = refused(&full("localhost", &wrong)).await;
    assert!(e.contains("not signed by a CA in sslrootcert"), "{e}");
    // `require` with a root certificate verifies the chain, as in libpq.
    let e = refused(&c.url("localhost", "postgres", &format!("sslmode=require&{wrong}"))).await;
    assert!(e.contains("not signed by a CA in sslrootcert"), "{e}");
    // The certificate names localhost, not 127.0.0.1.
    let e = refused(&full("127.0.0.1", &right)).await;
    assert!(
        e.contains("not valid for") && e.contains("127.0.0.1"),
        "{e}"
    );
    let ca = |host: &str, root: &str| c.url(host, "postgres", &format!("sslmode=verify-ca&{root}"));
    assert!(encrypted(&ca("127.0.0.1", &right)).await);
    let e = refused(&ca("127.0.0.1", &wrong)).await;
    assert!(e.contains("not signed by a CA in sslrootcert"), "{e}");
}

#[tokio::test]
async fn a_client_certificate_is_required_and_accepted() {
    let Some(c) = cluster("a_client_certificate_is_required_and_accepted").await else {
        return;
    };
    let root = TlsCluster::root(&c.pki.ca);
    let params = format!(
        "sslmode=verify-full&{root}&sslcert={}&sslkey={}",
        c.pki.client_cert.display(),
        c.pki.client_key.display()
    );
    assert!(encrypted(&c.url("localhost", CERT_USER, &params)).await);
    let e = refused(&c.url(
        "localhost",
        CERT_USER,
        &format!("sslmode=verify-full&{root}"),
    ))
    .await;
    assert!(e.contains("certificate"), "the server's reason: {e}");
}

#[tokio::test]
async fn the_key_value_form_takes_the_same_options() {
    let Some(c) = cluster("the_key_value_form_takes_the_same_options").await else {
        return;
    };
    let kv = format!(
        "host=localhost port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert='{}'",
        c.cluster.port(),
        c.pki.ca.display()
    );
    assert!(encrypted(&kv).await);
}

#[tokio::test]
async fn from_pool_with_tls_uses_the_host_applications_connector() {
    let Some(c) = cluster("from_pool_with_tls_uses_the_host_applications_connector").await else {
        return;
    };
    // The host application's own rustls setup, trusting the test CA.
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&c.pki.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
    let mut config = tokio_postgres::Config::new();
    config
        .host("localhost")
        .port(c.cluster.port())
        .user("postgres")
        .dbname("postgres")
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let manager = deadpool_postgres::Manager::from_config(
        config.clone(),
        tls.clone(),
        deadpool_postgres::ManagerConfig::default(),
    );
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(2)
        .build()
        .unwrap();
    let db = Database::from_pool_with_tls(pool, config, tls);
    // Migrations and the worker's lock connection use dedicated sessions.
    assert!(calendar_sync::migrate(&db).await.unwrap() > 0);
    let dedicated = db.dedicated().await.unwrap();
    let query = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    assert!(
        dedicated
            .query_one(query, &[])
            .await
            .unwrap()
            .get::<_, bool>(0)
    );
}
