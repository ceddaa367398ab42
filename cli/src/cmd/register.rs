//! `amble register …`: the privacy officer's register of people's requests over a running node
//! (mutual TLS, role `privacy-officer` or `admin`); `amble node requests` and `amble node
//! answer-request` do the same on a stopped node's data directory.

use crate::common::{RemoteArgs, rpc_error, runtime};
use crate::output::Output;
use amble_proto::v1 as pb;
use anyhow::Result;
use clap::{Subcommand, ValueEnum};
use pb::register_client::RegisterClient;
use serde_json::{Value, json};
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum RegisterCommand {
    /// List the requests people made (access, rectification, erasure, restriction, objection,
    /// review), each with its legal deadline; overdue ones are marked. Audited.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Which requests.
        #[arg(long, value_enum, default_value_t = Which::All)]
        which: Which,
    },
    /// Answer an open request (a review of an automated decision waits for a person): done or
    /// refused; a review: upheld or changed. Final; audited.
    Answer {
        #[command(flatten)]
        remote: RemoteArgs,
        /// The request's number, as `list` shows it.
        #[arg(long)]
        id: u64,
        /// done, refused, upheld (a review that keeps the decision) or changed.
        #[arg(long)]
        outcome: String,
    },
}

/// Which requests to list.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Which {
    /// Every request.
    All,
    /// Those not answered yet.
    Open,
    /// Those open after their deadline.
    Overdue,
}

impl Which {
    pub(crate) fn filter(self) -> amble_node::register::Filter {
        use amble_node::register::Filter;
        match self {
            Which::All => Filter::All,
            Which::Open => Filter::Open,
            Which::Overdue => Filter::Overdue,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Which::All => "all",
            Which::Open => "open",
            Which::Overdue => "overdue",
        }
    }
}

pub(crate) fn run(cmd: RegisterCommand, out: &Output) -> Result<ExitCode> {
    runtime()?.block_on(async {
        match cmd {
            RegisterCommand::List { remote, which } => {
                let r = RegisterClient::new(remote.channel().await?)
                    .list_requests(pb::ListRequestsRequest {
                        filter: which.as_str().into(),
                    })
                    .await
                    .map_err(|s| rpc_error("list requests", s))?
                    .into_inner();
                report(out, r.requests.iter().map(row).collect());
            }
            RegisterCommand::Answer {
                remote,
                id,
                outcome,
            } => {
                let r = RegisterClient::new(remote.channel().await?)
                    .answer_request(pb::AnswerRequestRequest { id, outcome })
                    .await
                    .map_err(|s| rpc_error("answer request", s))?
                    .into_inner();
                report(out, vec![row(&r)]);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn row(r: &pb::RegisteredRequest) -> Value {
    let blank = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    json!({"id": r.id, "subject": r.subject, "kind": r.kind, "received": r.received,
        "verified_by": r.verified_by, "deadline": r.deadline, "answered": blank(&r.answered),
        "outcome": blank(&r.outcome), "answered_by": blank(&r.answered_by),
        "overdue": r.overdue, "late": r.late})
}

/// The register as one row per request, from the node's own type (offline commands).
pub(crate) fn local_row(r: &amble_node::register::Request, now: time::OffsetDateTime) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    v["overdue"] = json!(r.overdue(now));
    v["late"] = json!(r.late());
    v
}

/// Prints requests: JSON rows with `--json`, else a table with what is overdue marked.
pub(crate) fn report(out: &Output, rows: Vec<Value>) {
    out.report(&rows, || {
        if rows.is_empty() {
            return "no requests".to_owned();
        }
        let text = |v: &Value, k: &str| v[k].as_str().unwrap_or("-").to_owned();
        let day = |v: &Value, k: &str| text(v, k).chars().take(10).collect::<String>();
        let mut s = format!(
            "{:>6}  {:<13}  {:<10}  {:<10}  {:<10}  {:<8}  {:<12}  {}\n",
            "id", "kind", "received", "deadline", "answered", "outcome", "subject", "verified by"
        );
        for v in &rows {
            let state = if v["overdue"] == json!(true) {
                "OVERDUE".to_owned()
            } else if v["late"] == json!(true) {
                format!("{} (late)", text(v, "outcome"))
            } else {
                text(v, "outcome")
            };
            s.push_str(&format!(
                "{:>6}  {:<13}  {:<10}  {:<10}  {:<10}  {:<8}  {:<12}  {}\n",
                v["id"],
                text(v, "kind"),
                day(v, "received"),
                day(v, "deadline"),
                day(v, "answered"),
                state,
                text(v, "subject").chars().take(12).collect::<String>(),
                text(v, "verified_by"),
            ));
        }
        let overdue = rows.iter().filter(|v| v["overdue"] == json!(true)).count();
        if overdue > 0 {
            s.push_str(&format!(
                "{overdue} overdue: answer them now (`amble register answer --id N --outcome …`)\n"
            ));
        }
        s.trim_end().to_owned()
    });
}
