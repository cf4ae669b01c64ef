//! The README states facts the code owns: the error reasons and codes the server returns,
//! its flags with their environment variables and defaults, and a message it
//! quotes. These tests hold the README to the code.

mod support;

use clap::CommandFactory;
use redwire::error::{Reason, code_name};
use redwire::proto::*;
use support::TestContext;
use tokio_stream::StreamExt;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

/// Every reason Redwire's errors carry has a row in the README's error table,
/// with the code it maps to (`Reason::ALL` lists them, next to the enum in
/// `src/error.rs`).
#[test]
fn the_error_table_lists_every_reason_with_its_code() {
    let readme = readme();
    for reason in Reason::ALL {
        let row = format!("| `{}` | `{}` |", reason.as_str(), code_name(reason.code()));
        assert!(
            readme.contains(&row),
            "README's error table lacks the row starting {row}"
        );
    }
}

/// The rows of the README's flag table: (flag, environment variable, default).
fn readme_flags() -> Vec<(String, String, String)> {
    readme()
        .lines()
        .filter(|line| line.starts_with("| `--"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let unquote = |cell: &str| cell.trim_matches('`').to_owned();
            (unquote(cells[1]), unquote(cells[2]), unquote(cells[3]))
        })
        .collect()
}

/// The README's flag table has exactly the flags `Config` has, each with its
/// environment variable and its default (or a parenthesised note where it has
/// none).
#[test]
fn the_flag_table_matches_the_config() {
    let mut documented = readme_flags();
    let mut actual: Vec<(String, String, String)> = redwire::Config::command()
        .get_arguments()
        .filter_map(|arg| {
            let flag = format!("--{}", arg.get_long()?);
            let env = arg.get_env()?.to_string_lossy().into_owned();
            let default = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(",");
            Some((flag, env, default))
        })
        .collect();
    documented.sort();
    actual.sort();
    let flags = |rows: &[(String, String, String)]| -> Vec<(String, String)> {
        rows.iter()
            .map(|(f, e, _)| (f.clone(), e.clone()))
            .collect()
    };
    assert_eq!(flags(&documented), flags(&actual), "flags and variables");
    for ((flag, _, written), (_, _, default)) in documented.iter().zip(&actual) {
        if default.is_empty() {
            assert!(
                written.starts_with('('),
                "{flag} has no default; the README says {written:?}"
            );
        } else {
            assert_eq!(written, default, "the default of {flag}");
        }
    }
}

/// The failure the README quotes for a producer stream is the message the
/// server really sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quoted_producer_stream_failure_is_the_real_one() {
    let ctx = TestContext::standalone().await;
    let request = EnqueueStreamRequest {
        queue: String::new(),
        job: Some(JobSpec::default()),
    };
    let mut replies = ctx
        .queue()
        .enqueue_stream(tokio_stream::iter(vec![request]))
        .await
        .expect("enqueue stream")
        .into_inner();
    let reply = replies.next().await.expect("a reply").expect("ok");
    let Some(enqueue_stream_response::Result::Failed(failure)) = reply.result else {
        panic!("an enqueue without a queue fails: {reply:?}");
    };
    let quoted = format!("`code: {}` and `{}`", failure.code, failure.message);
    let readme = readme().split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(readme.contains(&quoted), "README quotes {quoted}");
}

/// Every test the README's "Guarantees under faults" table names exists, in the
/// test crate it names (`queue::name` is `fn name` in tests/queue.rs, or in one
/// of the files of tests/queue/); a cell may name several, separated by commas.
#[test]
fn the_guarantees_table_names_real_tests() {
    let readme = readme();
    let section = readme
        .split("## Guarantees under faults")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Guarantees under faults section");
    let named: Vec<&str> = section
        .lines()
        .filter(|line| line.starts_with("| "))
        .filter_map(|line| line.trim_end_matches('|').rsplit('|').next())
        .flat_map(|cell| cell.split(", "))
        .map(|test| test.trim().trim_matches('`'))
        .filter(|test| test.contains("::"))
        .collect();
    assert!(named.len() >= 10, "{named:?}");
    for test in named {
        let (file, name) = test.split_once("::").expect("file::name");
        let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
        let path = tests.join(format!("{file}.rs"));
        let source = match std::fs::read_to_string(&path) {
            Ok(source) => source,
            // A test crate of several files: tests/<file>/*.rs.
            Err(_) => std::fs::read_dir(tests.join(file))
                .expect("the test file or directory")
                .map(|entry| std::fs::read_to_string(entry.expect("entry").path()).expect("read"))
                .collect(),
        };
        let path = path.display();
        assert!(
            source.contains(&format!("fn {name}(")),
            "README names {test}, which {path} lacks"
        );
    }
}

/// The rpcs whose proto comment says "Safe to retry." are exactly those the
/// shipped gRPC service config (`proto/service_config.json`) retries, and every
/// rpc's comment says how to retry it.
#[test]
fn the_service_config_retries_exactly_the_rpcs_the_protos_call_safe() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut safe_in_protos = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(root.join("proto/redwire/v1")).expect("proto dir") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("proto");
        let mut service = String::new();
        let mut comment = String::new();
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix("service ") {
                service = name.trim_end_matches(" {").to_owned();
            } else if let Some(text) = line.strip_prefix("//") {
                comment.push_str(text);
            } else if let Some(rpc) = line.strip_prefix("rpc ") {
                let method = rpc.split('(').next().expect("rpc name");
                assert!(
                    comment.contains("Retry") || comment.contains("retry"),
                    "{service}.{method}: its comment does not say how to retry it"
                );
                if comment.contains("Safe to retry.") {
                    safe_in_protos.insert(format!("redwire.v1.{service}/{method}"));
                }
                comment.clear();
            } else {
                comment.clear();
            }
        }
    }
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("proto/service_config.json")).expect("config"),
    )
    .expect("service config is JSON");
    let retried: std::collections::BTreeSet<String> = config["methodConfig"]
        .as_array()
        .expect("methodConfig")
        .iter()
        .filter(|c| c.get("retryPolicy").is_some())
        .flat_map(|c| c["name"].as_array().expect("names").iter())
        .map(|n| {
            format!(
                "{}/{}",
                n["service"].as_str().expect("service"),
                n["method"].as_str().expect("method")
            )
        })
        .collect();
    assert_eq!(retried, safe_in_protos);
}
