//! The README states facts the code owns: the status codes the server returns,
//! its flags with their environment variables and defaults, and a message it
//! quotes. These tests hold the README to the code.

mod support;

use clap::CommandFactory;
use redwire::Error;
use redwire::error::code_name;
use redwire::proto::*;
use support::TestContext;
use tokio_stream::StreamExt;
use tonic::Status;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

/// One error of each kind. The match below stops compiling when a kind is added,
/// so a new kind cannot miss its row in the README.
fn every_error() -> Vec<Error> {
    let all = vec![
        Error::invalid("key", "must not be empty"),
        Error::FailedPrecondition("wrong type".into()),
        Error::NotFound("no such job".into()),
        Error::Aborted("EXECABORT".into()),
        Error::ResourceExhausted("out of memory".into()),
        Error::Unavailable("connection refused".into()),
        Error::OutcomeUnknown("timed out".into()),
        Error::ShuttingDown,
        Error::Internal("unexpected reply".into()),
    ];
    for error in &all {
        match error {
            Error::InvalidArgument { .. }
            | Error::FailedPrecondition(_)
            | Error::NotFound(_)
            | Error::Aborted(_)
            | Error::ResourceExhausted(_)
            | Error::Unavailable(_)
            | Error::OutcomeUnknown(_)
            | Error::ShuttingDown
            | Error::Internal(_) => {}
        }
    }
    all
}

/// Every code Redwire's errors map to has a row in the README's status table.
#[test]
fn the_status_table_lists_every_code_the_server_returns() {
    let readme = readme();
    for error in every_error() {
        let name = code_name(Status::from(error.clone()).code());
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "README's status table lacks {name} (returned for {error:?})"
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
    let request = EnqueueRequest {
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
/// file it names (`queue::name` is `fn name` in tests/queue.rs); a cell may name
/// several, separated by commas.
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
        let path = format!("{}/tests/{file}.rs", env!("CARGO_MANIFEST_DIR"));
        let source = std::fs::read_to_string(&path).expect("the test file");
        assert!(
            source.contains(&format!("fn {name}(")),
            "README names {test}, which {path} lacks"
        );
    }
}
