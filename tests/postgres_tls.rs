//! PostgresSink over TLS, against a throwaway cluster that takes TLS connections only
//! (`hostssl` in pg_hba.conf) and presents a certificate for `localhost` signed by a CA
//! made for the test (openssl CLI). The shared server is not touched.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::pg_cluster::{Cluster, give_to_postgres};
use common::*;
use serde_json::{Value, json};

const EVENTS: u64 = 300;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA: `<name>.crt` and `<name>.key` in `dir`. Own config files, so the
/// system's openssl.cnf adds nothing.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    std::fs::write(
        dir.join(format!("{name}.cnf")),
        format!(
            "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n\
             [dn]\nCN = sluice test {name}\n\
             [v3_ca]\nbasicConstraints = critical, CA:TRUE\n\
             keyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-config",
            &format!("{name}.cnf"),
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
        ],
    );
    dir.join(format!("{name}.crt"))
}

/// `server.crt` / `server.key`, for `localhost` only (no IP address in it, so
/// `verify-full` to 127.0.0.1 must fail), signed by the CA `ca`.
fn make_server_cert(dir: &Path, ca: &str) {
    std::fs::write(
        dir.join("server.cnf"),
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = localhost\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost\n\
         authorityKeyIdentifier = keyid\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-config",
            "server.cnf",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
}

/// The certificates, and a cluster started with `ssl=on` that refuses plain TCP.
struct TlsServer {
    pki: tempfile::TempDir,
    pg: Cluster,
}

impl TlsServer {
    fn start() -> TlsServer {
        let pki = tempfile::tempdir().unwrap();
        make_ca(pki.path(), "ca");
        make_ca(pki.path(), "other-ca");
        make_server_cert(pki.path(), "ca");

        let mut pg = Cluster::init();
        // `localhost` may resolve to ::1 first: listen there too.
        pg.listen = "localhost".to_string();
        let data = pg.data();
        for file in ["server.crt", "server.key"] {
            std::fs::copy(pki.path().join(file), data.join(file)).unwrap();
        }
        let status = Command::new("chmod")
            .arg("600")
            .arg(data.join("server.key"))
            .status()
            .unwrap();
        assert!(status.success());
        give_to_postgres(&data);
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostssl all all ::1/128 trust\n",
        )
        .unwrap();
        pg.ctl("start");
        TlsServer { pki, pg }
    }

    fn cert(&self, name: &str) -> PathBuf {
        self.pki.path().join(name)
    }

    /// simulator → PostgresSink into `table` (auto-created), with extra sink keys.
    fn run(&self, table: &str, url: String, extra: Value) -> Output {
        let s = Scratch::new();
        // A failed sink leaves the source's records undurable; do not wait long for them.
        let worker = json!({
            "offset.storage.file.filename": s.path("offsets.json"),
            "offset.flush.interval.ms": 500,
            "task.shutdown.graceful.timeout.ms": 1000,
        });
        s.write("worker.json", &worker.to_string());
        let source = s.connector("sim", simulator("events", EVENTS));
        let mut sink = json!({
            "connector.class": "PostgresSink",
            "topics": "events",
            "connection.url": url,
            "table.name.format": table,
            "auto.create": "true",
        });
        for (k, v) in extra.as_object().unwrap() {
            sink[k] = v.clone();
        }
        let sink = s.connector("pg", sink);
        s.run(true, &[&source, &sink])
    }

    fn url(&self, host: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres", self.pg.port)
    }

    /// The table's row count, or `no table`.
    fn rows(&self, table: &str) -> String {
        if self
            .pg
            .psql(&format!("SELECT to_regclass('{table}') IS NULL"))
            == "t"
        {
            return "no table".to_string();
        }
        self.pg.psql(&format!("SELECT count(*) FROM {table}"))
    }
}

/// The failure the worker reports for the sink's task.
fn assert_task_failed(output: &Output) -> String {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(3), "{err}");
    assert!(err.contains("connector \"pg\" task 0 FAILED"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn verified_tls_connections_land_every_row() {
    let server = TlsServer::start();
    let ca = server.cert("ca.crt");

    // verify-full by name, the CA given as a connector key.
    let output = server.run(
        "by_name",
        server.url("localhost"),
        json!({"connection.sslmode": "verify-full", "connection.sslrootcert": ca}),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(server.rows("by_name"), EVENTS.to_string());

    // verify-ca does not compare the host name: by address, the CA given in the URL.
    let url = format!(
        "{}?sslmode=verify-ca&sslrootcert={}",
        server.url("127.0.0.1"),
        ca.display()
    );
    let output = server.run("by_address", url, json!({}));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(server.rows("by_address"), EVENTS.to_string());

    // The default (prefer) encrypts without checking, as libpq does, so a hostssl-only
    // server takes it; the JDBC spelling ssl=true (require) too.
    let output = server.run("preferred", server.url("127.0.0.1"), json!({}));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(server.rows("preferred"), EVENTS.to_string());
    let url = format!(
        "jdbc:postgresql://127.0.0.1:{}/postgres?user=postgres&ssl=true",
        server.pg.port
    );
    let output = server.run("jdbc", url, json!({}));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(server.rows("jdbc"), EVENTS.to_string());
}

#[test]
fn unverifiable_or_plain_connections_fail_with_a_clear_error() {
    let server = TlsServer::start();

    // Plain TCP: the server has no pg_hba.conf line for it.
    let output = server.run(
        "plain",
        server.url("localhost"),
        json!({"connection.sslmode": "disable"}),
    );
    let err = assert_task_failed(&output);
    assert!(
        err.contains("pg_hba.conf") && err.contains("no encryption"),
        "{err}"
    );

    // A CA that did not sign the server's certificate.
    let output = server.run(
        "wrong_ca",
        server.url("localhost"),
        json!({"connection.sslmode": "verify-full",
               "connection.sslrootcert": server.cert("other-ca.crt")}),
    );
    let err = assert_task_failed(&output);
    assert!(
        err.contains("TLS") && err.contains("UnknownIssuer"),
        "{err}"
    );

    // The right CA, but the certificate names `localhost`, not 127.0.0.1.
    let output = server.run(
        "wrong_name",
        server.url("127.0.0.1"),
        json!({"connection.sslmode": "verify-full",
               "connection.sslrootcert": server.cert("ca.crt")}),
    );
    let err = assert_task_failed(&output);
    assert!(
        err.contains("TLS") && err.contains("not valid for name"),
        "{err}"
    );

    // A root certificate file that is not there is a config error naming its key.
    let output = server.run(
        "missing_ca",
        server.url("localhost"),
        json!({"connection.sslmode": "verify-full",
               "connection.sslrootcert": server.cert("missing.crt")}),
    );
    let err = stderr(&output);
    assert!(!output.status.success(), "{err}");
    assert!(
        err.contains("connection.sslrootcert") && err.contains("missing.crt"),
        "{err}"
    );

    for table in ["plain", "wrong_ca", "wrong_name", "missing_ca"] {
        assert_eq!(server.rows(table), "no table");
    }
}
