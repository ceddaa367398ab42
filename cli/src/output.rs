//! How commands talk to people and scripts.

use std::io::IsTerminal;

/// Writes a line to stdout. A closed pipe (`amble … | head`) is not an error worth a panic:
/// the reader has what it wanted, so stop quietly.
pub(crate) fn print_line(s: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{s}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
    }
}

pub(crate) struct Output {
    pub json: bool,
}

impl Output {
    /// Prints `value` as JSON (with `--json`) or the text `human` produces.
    pub(crate) fn report<T: serde::Serialize>(&self, value: &T, human: impl FnOnce() -> String) {
        if self.json {
            match serde_json::to_string_pretty(value) {
                Ok(s) => print_line(&s),
                Err(e) => eprintln!("error: cannot render JSON: {e}"),
            }
        } else {
            print_line(&human());
        }
    }

    /// One error line on stderr (JSON object with `--json`), with the causes chained.
    pub(crate) fn error(&self, e: &anyhow::Error) {
        let mut msg = e.to_string();
        for cause in e.chain().skip(1) {
            let c = cause.to_string();
            if !msg.contains(&c) {
                msg.push_str(": ");
                msg.push_str(&c);
            }
        }
        if self.json {
            eprintln!("{}", serde_json::json!({ "error": msg }));
        } else {
            eprintln!("error: {msg}");
        }
    }

    /// A progress bar on stderr when it is a terminal and output is for people.
    pub(crate) fn progress(&self, len: u64, what: &str) -> indicatif::ProgressBar {
        if self.json || !std::io::stderr().is_terminal() {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(len);
        let style = indicatif::ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(what.to_owned());
        bar
    }
}
