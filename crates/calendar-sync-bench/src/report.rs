//! A scenario's results: markdown for people, JSON for machines, both written
//! under `docs/benchmarks/` (full runs only; `--quick` only prints).

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::support::Machine;

/// Where results go: `docs/benchmarks/` of the workspace, whatever the cwd.
pub fn out_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/benchmarks")
}

/// One scenario's report.
pub struct Report {
    name: &'static str,
    md: String,
    json: Map<String, Value>,
}

impl Report {
    /// A report with a title and the machine it ran on.
    pub fn new(name: &'static str, title: &str, machine: &Machine, quick: bool) -> Self {
        let mut md = String::new();
        writeln!(md, "# {title}\n").unwrap();
        writeln!(
            md,
            "`cargo run --release -p calendar-sync-bench -- {name}`{}\n",
            if quick { " --quick (smoke size)" } else { "" }
        )
        .unwrap();
        writeln!(md, "Machine: {}.\n", machine.line()).unwrap();
        let mut json = Map::new();
        json.insert("scenario".into(), Value::from(name));
        json.insert("title".into(), Value::from(title));
        json.insert("quick".into(), Value::from(quick));
        json.insert("machine".into(), machine.json());
        json.insert(
            "unix_time".into(),
            Value::from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            ),
        );
        Self { name, md, json }
    }

    /// A paragraph of text.
    pub fn para(&mut self, text: &str) {
        writeln!(self.md, "{text}\n").unwrap();
    }

    /// A markdown table.
    pub fn table(&mut self, headers: &[&str], rows: &[Vec<String>]) {
        writeln!(self.md, "| {} |", headers.join(" | ")).unwrap();
        writeln!(
            self.md,
            "|{}",
            headers.iter().map(|_| "---|").collect::<String>()
        )
        .unwrap();
        for row in rows {
            writeln!(self.md, "| {} |", row.join(" | ")).unwrap();
        }
        self.md.push('\n');
    }

    /// A preformatted block (a query plan).
    pub fn code(&mut self, text: &str) {
        writeln!(self.md, "```text\n{}\n```\n", text.trim_end()).unwrap();
    }

    /// A JSON field.
    pub fn set(&mut self, key: &str, value: Value) {
        self.json.insert(key.to_owned(), value);
    }

    /// Prints the report and, on full runs, writes `<name>.md` and `<name>.json`.
    pub fn finish(self, quick: bool) {
        print!("{}", self.md);
        if quick {
            return;
        }
        let dir = out_dir();
        std::fs::create_dir_all(&dir).expect("create docs/benchmarks");
        let md = dir.join(format!("{}.md", self.name));
        let json = dir.join(format!("{}.json", self.name));
        std::fs::write(&md, &self.md).expect("write markdown");
        let text = serde_json::to_string_pretty(&Value::Object(self.json)).expect("json");
        std::fs::write(&json, text + "\n").expect("write json");
        println!(
            "written: docs/benchmarks/{0}.md, docs/benchmarks/{0}.json",
            self.name
        );
    }
}

/// Formats a number with the given decimals.
pub fn f(x: f64, decimals: usize) -> String {
    if x.is_nan() {
        "n/a".to_owned()
    } else {
        format!("{x:.decimals$}")
    }
}

/// "met" or "NOT met".
pub fn verdict(met: bool) -> String {
    if met { "met" } else { "**not met**" }.to_owned()
}
