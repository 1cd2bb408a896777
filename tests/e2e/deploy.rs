//! The deployment files under `deploy/` against the real binary: the
//! offline checks of `deploy/check.sh` pass, and every metric the
//! dashboards and alert rules name is one a running `zocalo up` exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::{ADMIN_EMAIL, ADMIN_PASSWORD, Stack, access, support};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Kustomize renders, schemas, per-Deployment requirements, compose,
/// Dockerfile, promtool (see the script). Without `CI=true` a missing tool
/// is reported as skipped by the script; under CI it fails.
#[test]
fn deployment_files_pass_the_offline_checks() {
    let output = Command::new("bash")
        .arg("deploy/check.sh")
        .current_dir(repository())
        .output()
        .expect("run deploy/check.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "deploy/check.sh failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_alerts_name_exported_metrics() {
    let stack = Stack::start();
    exercise(&stack).await;
    let exported = exported_names(&support::metrics(&stack.http, &stack.base).await);
    let used = used_names();
    assert!(
        used.contains("http_request_duration_seconds_bucket") && used.len() > 20,
        "the extraction finds the metric names: {used:?}"
    );
    let allowed = allow_list();
    let sources = service_sources();
    let mut missing = Vec::new();
    for name in &used {
        if exported.contains(name) {
            continue;
        }
        match allowed
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, kind)| kind.as_str())
        {
            Some("prometheus" | "pending") => {}
            Some("conditional") if sources.contains(&format!("\"{name}\"")) => {}
            Some(kind) => missing.push(format!("{name} ({kind}, but not in the source)")),
            None => missing.push(name.clone()),
        }
    }
    assert!(
        missing.is_empty(),
        "named by dashboards or alerts but not exported: {missing:?}\nexported: {exported:?}"
    );
    let unused: Vec<_> = allowed.iter().filter(|(n, _)| !used.contains(n)).collect();
    assert!(
        unused.is_empty(),
        "allow-listed but used nowhere: {unused:?}"
    );
    assert!(stack.stop().success());
}

/// Requests that make every service record its metrics: sign-ins, a review,
/// a book bought and delivered (jobs, events, outbox, payments).
async fn exercise(stack: &Stack) {
    let http = &stack.http;
    let admin = stack.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let editor = crate::register_and_login(stack, "ed@example.com").await;
    let editor_id = crate::user_id(http, &stack.base, access(&editor)).await;
    let granted = http
        .put(stack.url(&format!("/auth/users/{editor_id}/roles/editor")))
        .bearer_auth(access(&admin))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 200);
    let editor = stack.login("ed@example.com", "a-good-password").await;
    let camera = support::json(
        http.post(stack.url("/api/cameras"))
            .bearer_auth(access(&editor))
            .json(&json!({"brand": "Leica", "model": "Q3", "sensor": "full frame", "megapixels": 60.3, "released": 2023})),
    )
    .await;
    let review = http
        .post(stack.url("/api/reviews"))
        .bearer_auth(access(&editor))
        .json(&json!({"title": "Fixed lens", "content": "Sharp and quiet.", "rating": 4, "camera_id": camera["id"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(review.status(), 201);
    let _ = http.get(stack.url("/api/content")).send().await.unwrap();

    let seller = crate::register_and_login(stack, "seller@example.com").await;
    let buyer = crate::register_and_login(stack, "buyer@example.com").await;
    let book = crate::list_book(stack, &seller, 2).await;
    let order = support::accepted_order(
        http.post(stack.url("/api/orders"))
            .bearer_auth(access(&buyer))
            .header("idempotency-key", "metrics")
            .json(&support::one_copy_order(
                book["id"].clone(),
                "Av. Juárez 1, CDMX",
                "dhl",
                "4242 4242 4242 4242",
            )),
    )
    .await;
    let id = order["id"].as_str().unwrap();
    crate::wait_for_status(stack, &buyer, id, "delivered").await;
}

/// Metric names in Prometheus text (`name{labels} value` or `name value`).
fn exported_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Every metric name in the dashboards' and alert rules' PromQL.
fn used_names() -> BTreeSet<String> {
    let deploy = repository().join("deploy");
    let mut expressions = Vec::new();
    for entry in std::fs::read_dir(deploy.join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let board: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            collect_exprs(&board, &mut expressions);
        }
    }
    let rules = std::fs::read_to_string(deploy.join("prometheus/alerts.yml")).unwrap();
    expressions.extend(
        rules
            .lines()
            .filter_map(|line| line.trim().strip_prefix("expr:"))
            .map(str::to_owned),
    );
    assert!(!expressions.is_empty());
    expressions.iter().flat_map(|e| metric_names(e)).collect()
}

fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                match (key.as_str(), item) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(item, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_exprs(item, out)),
        _ => {}
    }
}

/// PromQL keywords and aggregation operators (which may be followed by
/// `by (…)` rather than by their parenthesis).
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
];

/// The metric names of one PromQL expression: identifiers outside label
/// matchers, ranges and strings that are neither functions (followed by
/// `(`), keywords, nor the label lists of `by (…)` and the like.
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let mut grouping = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' => i = skip_to(&chars, i, '}'),
            '[' => i = skip_to(&chars, i, ']'),
            '"' => i = skip_to(&chars, i + 1, '"'),
            ')' => {
                grouping = false;
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':'))
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                let keyword = KEYWORDS.contains(&word.as_str());
                let groups = matches!(
                    word.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                );
                if groups && next == Some(&'(') {
                    grouping = true;
                } else if !keyword && !grouping && next != Some(&'(') {
                    names.push(word);
                }
            }
            c if c.is_ascii_digit() => {
                // Numbers and durations (`5m`, `1e3`) are no names.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

fn skip_to(chars: &[char], from: usize, end: char) -> usize {
    chars[from..]
        .iter()
        .position(|&c| c == end)
        .map_or(chars.len(), |at| from + at + 1)
}

/// `(name, kind)` of every line of the allow-list.
fn allow_list() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(repository().join("deploy/dashboards/metrics-allowlist.txt"))
            .unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next().unwrap().to_owned();
            let kind = words.next().expect("every entry has a kind").to_owned();
            (name, kind)
        })
        .collect()
}

/// The Rust source of every crate, concatenated.
fn service_sources() -> String {
    let mut text = String::new();
    let mut dirs = vec![repository().join("crates")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                text.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
    }
    text
}

#[test]
fn promql_names_are_found_outside_labels_ranges_and_groupings() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (service, le) (rate(http_request_duration_seconds_bucket{service=~"$service",le="0.25"}[$__rate_interval]))) / on (service) group_left up > bool 1e3"#,
    );
    assert_eq!(names, ["http_request_duration_seconds_bucket", "up"]);
    assert_eq!(
        metric_names(
            "max by (queue) (job_queue_depth) > 100 and max by (queue) (deriv(job_queue_depth[10m])) > 0"
        ),
        ["job_queue_depth", "job_queue_depth"]
    );
}

/// `zocalo worker` serves `/live`, `/ready` and `/metrics` on
/// `worker_listen` (probes and scraping in containers), and `zocalo admin
/// probe` — the images' health check — tells a ready endpoint from a
/// missing one by its exit status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_admin_endpoints_that_the_probe_command_checks() {
    let data = crate::tempfile_dir::Dir::new();
    let sqlite = |file: &str| format!("sqlite://{}", data.0.join(file).display());
    let mut child = crate::zocalo()
        .args(["worker", "orders"])
        .env("ZOCALO_DATA_DIR", &data.0)
        .env("ZOCALO_ORDERS__DATABASE_URL", sqlite("orders.db"))
        .env("ZOCALO_ORDERS__BUS_URL", sqlite("bus.db"))
        .env("ZOCALO_ORDERS__CLIENT_SECRET", "unused-here")
        .env("ZOCALO_WORKER_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = support::stdout_lines(&mut child);
    let port: u16 = support::wait_for_line(&lines, "the worker's admin port", |line| {
        line.strip_prefix("Orders worker admin endpoints on port ")?
            .parse()
            .ok()
    });
    let probe = |url: String| {
        crate::zocalo()
            .args(["admin", "probe", &url])
            .output()
            .unwrap()
    };
    let ready = probe(format!("http://127.0.0.1:{port}/ready"));
    assert!(ready.status.success(), "{ready:?}");
    let absent = probe(format!("http://127.0.0.1:{port}/no-such-path"));
    assert!(!absent.status.success(), "a 404 is not healthy");
    let closed = probe(format!("http://127.0.0.1:{}/live", crate::free_port()));
    assert!(!closed.status.success(), "nothing listening is not healthy");
    let metrics =
        support::metrics(&reqwest::Client::new(), &format!("http://127.0.0.1:{port}")).await;
    assert!(metrics.contains("upstream_retries_total"), "{metrics}");
    let _ = child.kill();
    let _ = child.wait();
}
