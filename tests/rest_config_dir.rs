//! `sluice standalone --config-dir DIR` against the real binary: files dropped in, changed
//! in and deleted from a watched directory create, replace and delete connectors, next to
//! the REST API (read with curl, a client written elsewhere).

mod common;

use std::path::Path;
use std::time::Duration;

use common::rest::{self, Api};
use common::*;
use serde_json::{Value, json};

/// Polls `check` until it returns something (20 s at most).
fn wait_for<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    rest::wait_for(what, Duration::from_secs(20), check)
}

/// A standalone worker watching `<scratch>/conf`, serving REST on a free port, its log
/// (config-dir lines at info) in `<scratch>/sluice-<n>.log`.
struct Sluice(Api);

impl std::ops::Deref for Sluice {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.0
    }
}

impl Sluice {
    fn start(s: &Scratch, run: u32) -> Sluice {
        Sluice(
            Api::builder(s)
                .env("RUST_LOG", "warn,sluice::config_dir=info")
                .arg("--config-dir")
                .arg(s.path("conf"))
                .log(&format!("sluice-{run}.log"))
                .start(&[]),
        )
    }

    fn names(&self) -> Vec<String> {
        let (code, body) = self.get("/connectors");
        assert_eq!(code, 200, "{body}");
        let mut names: Vec<String> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }

    /// Waits until `GET /connectors/{name}/config` answers `config` (the name included).
    fn wait_config(&self, name: &str, config: &Value) {
        let mut expected = config.clone();
        expected["name"] = json!(name);
        wait_for(&format!("{name}'s config to become {expected}"), || {
            let (code, body) = self.get(&format!("/connectors/{name}/config"));
            (code == 200 && body == expected).then_some(())
        });
    }

    fn wait_running(&self, name: &str) {
        wait_for(&format!("{name} RUNNING"), || {
            let (code, status) = self.get(&format!("/connectors/{name}/status"));
            let tasks = status["tasks"].as_array().cloned().unwrap_or_default();
            (code == 200
                && !tasks.is_empty()
                && tasks.iter().all(|t| t["state"] == json!("RUNNING")))
            .then_some(())
        });
    }

    fn wait_log(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        wait_for(what, || {
            let log = self.log();
            log.lines().find(|l| check(l)).map(str::to_string)
        })
    }

    fn assert_alive(&mut self) {
        assert!(
            self.0.child.try_wait().unwrap().is_none(),
            "sluice exited: {}",
            self.log()
        );
    }
}

/// Writes a connector file as an editor does: a temporary file renamed over the old one.
fn save(path: &Path, document: &Value) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, serde_json::to_vec_pretty(document).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn files_in_the_config_dir_create_update_and_delete_connectors() {
    let s = Scratch::new();
    let conf = s.path("conf");
    std::fs::create_dir(&conf).unwrap();
    // Present at start: loaded at start.
    let sim_config = simulator("shop", 1_000_000);
    save(
        &conf.join("sim.json"),
        &json!({"name": "sim", "config": sim_config}),
    );
    let mut sluice = Sluice::start(&s, 1);
    assert_eq!(sluice.names(), ["sim"]);
    sluice.wait_config("sim", &sim_config);
    sluice.wait_running("sim");

    // Dropped in: created.
    let files_path = conf.join("files.json");
    let out = s.path("out.jsonl");
    let files_v1 = file_sink("shop", &out, "value");
    save(&files_path, &json!({"name": "files", "config": files_v1}));
    sluice.wait_config("files", &files_v1);
    sluice.wait_running("files");
    wait_for("records in the sink's file", || {
        (!read_lines(&out).is_empty()).then_some(())
    });

    // Changed (written to a temporary file, then renamed): replaced, once.
    let mut files_v2 = files_v1.clone();
    files_v2["format"] = json!("envelope");
    files_v2["tasks.max"] = json!("1");
    save(&files_path, &json!({"name": "files", "config": files_v2}));
    sluice.wait_config("files", &files_v2);
    sluice.wait_running("files");

    // Invalid: logged with the file, the connector and the key; nothing changes.
    let mut bad = files_v2.clone();
    bad["tasks.max"] = json!("0");
    save(&files_path, &json!({"name": "files", "config": bad}));
    let line = sluice.wait_log("the invalid file's log line", |l| {
        l.contains("ERROR") && l.contains("tasks.max") && l.contains("files.json")
    });
    assert!(line.contains(r#"connector "files""#), "{line}");
    assert!(line.contains(r#"key "tasks.max""#), "{line}");
    // Not JSON at all: logged with the file too.
    std::fs::write(&files_path, "{\"name\": \"files\", \"config\": {").unwrap();
    let line = sluice.wait_log("the unparseable file's log line", |l| {
        l.contains("ERROR") && l.contains("invalid JSON") && l.contains("files.json")
    });
    assert!(line.contains("changes nothing"), "{line}");
    sluice.wait_config("files", &files_v2);
    sluice.wait_running("files");
    sluice.assert_alive();
    // The rename made one update, not two (each change above has been handled since).
    let log = sluice.log();
    assert_eq!(
        count(&log, "connector updated from the config dir"),
        1,
        "{log}"
    );
    assert_eq!(
        count(&log, "connector created from the config dir"),
        1,
        "{log}"
    );

    // REST changes the file's connector: REST's config holds until the file changes.
    let mut from_rest = files_v2.clone();
    from_rest["format"] = json!("value");
    let (code, body) = sluice.call(
        "PUT",
        "/connectors/files/config",
        Some(&from_rest.to_string()),
    );
    assert_eq!(code, 200, "{body}");
    sluice.wait_config("files", &from_rest);
    // Fixing the invalid file is its next change: the file wins.
    let mut files_v3 = files_v2.clone();
    files_v3["tasks.max"] = json!("2");
    save(&files_path, &json!({"name": "files", "config": files_v3}));
    sluice.wait_config("files", &files_v3);
    sluice.wait_running("files");

    // Deleted: the connector goes; the other stays.
    std::fs::remove_file(&files_path).unwrap();
    wait_for("files to be deleted", || {
        (sluice.get("/connectors/files").0 == 404).then_some(())
    });
    assert_eq!(sluice.names(), ["sim"]);
    sluice.wait_log("the delete's log line", |l| {
        l.contains("connector deleted: its file left the config dir") && l.contains("files")
    });
    sluice.assert_alive();
}

#[test]
fn the_config_dir_is_the_truth_across_restarts() {
    let s = Scratch::new();
    let conf = s.path("conf");
    std::fs::create_dir(&conf).unwrap();
    let sim = json!({"name": "sim", "config": simulator("shop", 1_000_000)});
    save(&conf.join("sim.json"), &sim);
    // Files that are not connector files are left alone.
    std::fs::write(conf.join("README.md"), "# connectors").unwrap();
    std::fs::write(conf.join(".files.json.swp"), "garbage").unwrap();
    {
        let sluice = Sluice::start(&s, 1);
        assert_eq!(sluice.names(), ["sim"]);
        // A .properties file, as on the command line, dropped in while the worker runs
        // (so the connector store keeps it too).
        let out = s.path("out.jsonl");
        std::fs::write(
            conf.join("files.properties"),
            format!(
                "name=files\nconnector.class=FileSink\ntopics=shop\nfile={}\nformat=value\n",
                out.display()
            ),
        )
        .unwrap();
        sluice.wait_running("files");
        assert_eq!(sluice.names(), ["files", "sim"]);
        // Paused over REST: the state outlives a restart (the file holds only the config).
        let (code, _) = sluice.call("PUT", "/connectors/sim/pause", None);
        assert_eq!(code, 202);
        // A second file naming the same connector is refused; the first keeps it.
        save(
            &conf.join("zz-sim-again.json"),
            &json!({"name": "sim", "config": simulator("other", 5)}),
        );
        let line = sluice.wait_log("the duplicate's log line", |l| {
            l.contains("zz-sim-again.json") && l.contains("already defined")
        });
        assert!(line.contains("sim.json"), "{line}");
        sluice.wait_config("sim", &sim["config"]);
    }
    // While the worker is down: one file deleted, one added.
    std::fs::remove_file(conf.join("files.properties")).unwrap();
    std::fs::remove_file(conf.join("zz-sim-again.json")).unwrap();
    save(
        &conf.join("more.json"),
        &json!({"name": "more", "config": simulator("other", 10)}),
    );
    let sluice = Sluice::start(&s, 2);
    // The deleted file's connector does not come back from the connector store.
    assert_eq!(sluice.names(), ["more", "sim"]);
    let (_, status) = sluice.get("/connectors/sim/status");
    assert_eq!(status["connector"]["state"], json!("PAUSED"), "{status}");
}
