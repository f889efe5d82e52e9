//! The README's shell steps, run as written with the real binaries: the security center,
//! and the walkthrough with the key distribution center (broker, publish, read, revoke,
//! KDC). The steps are read from README.md when this test is compiled, so what the README
//! says is what is tested, and the outputs it shows are checked.
//!
//! Each command runs with `bash -c` in a scratch directory (one per README section run),
//! with only these substitutions:
//! - `cargo ...`, `export PATH=...` and `cd ...` lines are skipped: the binaries come
//!   from this build (first on `PATH`) and the scratch directory is the current one;
//! - the ports 1883, 8883 and 8443 of 127.0.0.1 become free ephemeral ports;
//! - `RUST_LOG=info`, so that a background `sealpost-sub` says when it has subscribed.
//!
//! What the README marks is understood this way:
//! - a command ending in `&` runs in the background, named by the last word of its
//!   comment (`# alice`); the next command starts once the broker accepts connections, or
//!   a subscriber has subscribed;
//! - a comment `# until Ctrl-C` after a command: it is interrupted (SIGINT) once the
//!   outputs shown after it have appeared; `# fails: WHY`: it must exit unsuccessfully
//!   and say WHY; any other command must succeed;
//! - comment lines after a command of the form `NAME prints[ on stderr]: TEXT`, or ending
//!   in `:` with the text on the following, further indented comment lines (one expected
//!   line each), are outputs that must appear (within a minute) in the output of the
//!   background process NAME, or of the command itself when NAME is its program;
//!   `NAME prints nothing on stdout` means what it says.

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sealpost_tests::free_ports;
use sealpost_tests::tools::{bin_dir, Running};

const README: &str = include_str!("../../README.md");

/// How long an output shown in the README may take to appear (the subscriber's hold
/// time is 10 s; the machine may be busy).
const OUTPUT_WAIT: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stream {
    Stdout,
    Stderr,
}

/// An output the README shows.
#[derive(Debug)]
struct Expect {
    who: String,
    stream: Stream,
    /// A line that must contain this; `None`: the stream must stay empty.
    text: Option<String>,
}

/// One command of a README block, with what the README says about it.
#[derive(Debug)]
struct Step {
    /// The command as bash runs it, without a trailing `&`.
    command: String,
    /// The name given to a background command.
    background: Option<String>,
    until_ctrl_c: bool,
    /// `# fails: WHY`: what the failing command's output must contain.
    fails: Option<String>,
    expects: Vec<Expect>,
}

impl Step {
    fn program(&self) -> &str {
        self.command.split_whitespace().next().unwrap_or("")
    }

    /// Skipped: building, `PATH` and changing directory are the test's own.
    fn skipped(&self) -> bool {
        self.program() == "cargo"
            || self.command.starts_with("export PATH=")
            || self.command.starts_with("cd ")
    }
}

/// The ```sh blocks of the README section whose heading starts with `heading`.
fn section_blocks(heading: &str) -> Vec<String> {
    let start = README
        .lines()
        .position(|l| l.starts_with(heading))
        .unwrap_or_else(|| panic!("README has no section {heading:?}"));
    let mut blocks = Vec::new();
    let mut block: Option<String> = None;
    for line in README.lines().skip(start + 1) {
        if block.is_none() && line.starts_with("## ") {
            break;
        }
        match (&mut block, line.trim_end()) {
            (None, "```sh") => block = Some(String::new()),
            (Some(_), "```") => blocks.extend(block.take()),
            (Some(text), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(
        !blocks.is_empty(),
        "no sh block in README section {heading:?}"
    );
    blocks
}

/// Where the comment of a shell line starts (a `#` at the start or after a blank,
/// outside quotes).
fn comment_start(line: &str) -> Option<usize> {
    let (mut single, mut double) = (false, false);
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && previous.is_whitespace() => return Some(i),
            _ => {}
        }
        previous = c;
    }
    None
}

/// Parses a README block into its commands and the outputs it shows for them.
fn parse_block(block: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    // An expectation whose lines follow: (who, stream, indentation of its first line).
    let mut open: Option<(String, Stream, usize)> = None;
    let mut lines = block.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            open = None;
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            let indent = comment.len() - comment.trim_start().len();
            let text = comment.trim();
            if let Some((who, stream, first)) = &open {
                if indent > *first && !text.contains(" prints") {
                    let step = steps.last_mut().expect("output before any command");
                    step.expects.push(Expect {
                        who: who.clone(),
                        stream: *stream,
                        text: Some(text.to_owned()),
                    });
                    continue;
                }
            }
            open = None;
            let Some((head, inline)) = expectation_head(text) else {
                continue;
            };
            let who = head.split(" prints").next().unwrap_or("");
            let who = who.split_whitespace().last().unwrap_or("").to_owned();
            let step = steps
                .last_mut()
                .unwrap_or_else(|| panic!("output before any command: {line}"));
            if head.contains("nothing on stdout") {
                step.expects.push(Expect {
                    who: who.clone(),
                    stream: Stream::Stdout,
                    text: None,
                });
            }
            let stream = if head.contains("on stderr") {
                Stream::Stderr
            } else {
                Stream::Stdout
            };
            match inline {
                Some(text) if !text.is_empty() => step.expects.push(Expect {
                    who,
                    stream,
                    text: Some(text.to_owned()),
                }),
                _ if head.contains("nothing on stdout") && !head.contains("on stderr") => {}
                _ => open = Some((who, stream, indent)),
            }
            continue;
        }
        open = None;
        // A command: continuation lines and here-documents belong to it.
        let mut physical = vec![line.to_owned()];
        while physical.last().unwrap().trim_end().ends_with('\\') {
            physical.push(lines.next().expect("continued line").to_owned());
        }
        if let Some(at) = line.find("<<") {
            let delimiter: String = line[at + 2..]
                .trim_start_matches('-')
                .trim()
                .trim_matches(['\'', '"'])
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            loop {
                let next = lines.next().expect("here-document ends");
                physical.push(next.to_owned());
                if next.trim() == delimiter {
                    break;
                }
            }
        }
        let last = physical.pop().unwrap();
        let (code, comment) = match comment_start(&last) {
            Some(i) => (last[..i].to_owned(), last[i + 1..].trim().to_owned()),
            None => (last, String::new()),
        };
        let code = code.trim_end();
        let background = code.ends_with('&') && !code.ends_with("&&");
        physical.push(code.trim_end_matches('&').trim_end().to_owned());
        steps.push(Step {
            command: physical.join("\n"),
            background: background.then(|| {
                let name = comment.split_whitespace().last();
                name.expect("a background command is named by its comment")
                    .to_owned()
            }),
            until_ctrl_c: comment.contains("until Ctrl-C"),
            fails: comment
                .strip_prefix("fails")
                .map(|why| why.trim_start_matches(':').trim().to_owned()),
            expects: Vec::new(),
        });
    }
    steps
}

/// `NAME ... prints ...: TEXT` split at the first colon into the part naming who and how,
/// and the text shown (if any).
fn expectation_head(text: &str) -> Option<(&str, Option<&str>)> {
    let (head, inline) = match text.split_once(':') {
        Some((head, inline)) => (head, Some(inline.trim())),
        None => (text, None),
    };
    head.contains(" prints").then_some((head, inline))
}

/// The README's ports and the free ones that replace them.
struct Ports {
    mqtt: u16,
    mqtts: u16,
    kdc: u16,
}

impl Ports {
    fn substitute(&self, text: &str) -> String {
        text.replace("127.0.0.1:1883", &format!("127.0.0.1:{}", self.mqtt))
            .replace("127.0.0.1:8883", &format!("127.0.0.1:{}", self.mqtts))
            .replace("127.0.0.1:8443", &format!("127.0.0.1:{}", self.kdc))
    }
}

/// Runs the README sections starting with `headings`, in order, in one scratch directory.
fn run_sections(headings: &[&str]) {
    let scratch = tempfile::tempdir().unwrap();
    let [mqtt, mqtts, kdc] = free_ports(3)[..] else {
        unreachable!("three ports")
    };
    let ports = Ports { mqtt, mqtts, kdc };
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let shell = |command: &str| {
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(ports.substitute(command))
            .current_dir(scratch.path())
            .env("PATH", &path)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null());
        c
    };
    let mut background: Vec<(String, Running)> = Vec::new();
    let mut shown = 0;
    for heading in headings {
        for block in section_blocks(heading) {
            for step in parse_block(&block) {
                if step.skipped() {
                    continue;
                }
                eprintln!("$ {}", step.command);
                shown += step.expects.len() + usize::from(step.fails.is_some());
                if let Some(name) = &step.background {
                    assert!(
                        step.expects.is_empty(),
                        "outputs after a background command"
                    );
                    let mut running = Running::start(&mut shell(&format!("exec {}", step.command)));
                    wait_until_ready(&step, &mut running, &ports);
                    background.push((name.clone(), running));
                } else {
                    // `exec`: Ctrl-C goes to the program, not to bash.
                    let command = match step.until_ctrl_c {
                        true => format!("exec {}", step.command),
                        false => step.command.clone(),
                    };
                    run_foreground(&step, shell(&command), &background, &ports);
                }
            }
        }
    }
    assert!(
        shown > 0,
        "README sections {headings:?} show no outputs to check"
    );
    // Their stderr is a pipe, not a terminal: logs without colour codes (issue 14 item 4).
    for (name, process) in &background {
        let stderr = process.stderr();
        assert!(
            !stderr.contains('\u{1b}'),
            "{name} logs colour codes: {stderr:?}"
        );
    }
    drop(background);
    check_scratch_is_ignored(scratch.path());
}

/// Waits until a background command can be relied on by the next one.
fn wait_until_ready(step: &Step, running: &mut Running, ports: &Ports) {
    match step.program() {
        "sealpost-broker" => running.wait_until("listening", Duration::from_secs(60), |_| {
            [ports.mqtt, ports.mqtts]
                .iter()
                .all(|port| TcpStream::connect(("127.0.0.1", *port)).is_ok())
        }),
        "sealpost-sub" => running.wait_for_stderr("subscribed", Duration::from_secs(60)),
        _ => {}
    }
}

/// Runs a foreground command until it exits (or, `until Ctrl-C`, until its outputs have
/// appeared, then interrupts it), checks its exit status and the outputs shown after it.
fn run_foreground(
    step: &Step,
    mut command: Command,
    background: &[(String, Running)],
    ports: &Ports,
) {
    let mut running = Running::start(&mut command);
    let output_of = |who: &str, running: &Running, stream: Stream| -> String {
        let process = if who == step.program() {
            running
        } else {
            &background
                .iter()
                .rev()
                .find(|(name, _)| name == who)
                .unwrap_or_else(|| {
                    panic!("the README shows output of {who:?}, which no command started")
                })
                .1
        };
        match stream {
            Stream::Stdout => process.stdout(),
            Stream::Stderr => process.stderr(),
        }
    };
    let missing = |running: &Running| -> Vec<&Expect> {
        step.expects
            .iter()
            .filter(|e| {
                let out = output_of(&e.who, running, e.stream);
                match &e.text {
                    Some(text) => !out.lines().any(|l| l.contains(&ports.substitute(text))),
                    None => !out.is_empty(),
                }
            })
            .collect()
    };
    let deadline = Instant::now() + OUTPUT_WAIT;
    let status = loop {
        let exited = running.try_wait();
        let missing = missing(&running);
        match exited {
            Some(status) if missing.is_empty() => break status,
            None if missing.is_empty() && step.until_ctrl_c => {
                break running.interrupt(Duration::from_secs(30))
            }
            _ => {}
        }
        if Instant::now() > deadline {
            let mut report = format!(
                "README step `{}` (exit {exited:?}): not shown within {OUTPUT_WAIT:?}: {missing:#?}\n\
                 its stdout: {}\nits stderr: {}\n",
                step.command,
                running.stdout(),
                running.stderr()
            );
            for (name, process) in background {
                report += &format!(
                    "{name} stdout: {}\n{name} stderr: {}\n",
                    process.stdout(),
                    process.stderr()
                );
            }
            panic!("{report}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = format!("{}{}", running.stdout(), running.stderr());
    assert_eq!(
        status.success(),
        step.fails.is_none(),
        "README step `{}` exited {status}, the README says it {}\n{output}",
        step.command,
        if step.fails.is_some() {
            "fails"
        } else {
            "succeeds"
        },
    );
    if let Some(why) = &step.fails {
        assert!(
            output.contains(why.as_str()),
            "README step `{}` fails without saying {why:?}:\n{output}",
            step.command
        );
    }
}

/// The directories the README's steps leave behind (certificates, keys, state) are ones
/// `.gitignore` keeps out of a commit, should someone follow the steps in the checkout.
fn check_scratch_is_ignored(scratch: &Path) {
    let ignored: Vec<&str> = include_str!("../../.gitignore")
        .lines()
        .map(str::trim)
        .collect();
    for entry in std::fs::read_dir(scratch).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            let name = format!("/{}/", entry.file_name().to_string_lossy());
            assert!(
                ignored.contains(&name.as_str()),
                "{name} is not in .gitignore"
            );
        }
    }
}

#[test]
fn security_center_section_runs_as_written() {
    run_sections(&["## The security center"]);
}

#[test]
fn walkthrough_and_kdc_sections_run_as_written() {
    run_sections(&["## Walkthrough", "## Key distribution center"]);
}

#[test]
fn the_parser_understands_the_readme_marks() {
    let steps = parse_block(
        "cargo build -p x\n\
         a 'x/#' --flag \\\n   --more &   # the broker\n\
         cat > f <<'EOF'\nline # not a comment\nEOF\n\
         run -m \"21.5 C\"  # until Ctrl-C\n\
         #   alice prints: t [p] 21.5 C\n\
         #   eve prints nothing on stdout; on stderr, after a while:\n\
         #     rejected t: why (kind)\n\
         #   run prints on stderr: granted alice\n\
         check   # fails: revoked\n",
    );
    assert_eq!(steps.len(), 5, "{steps:#?}");
    assert!(steps[0].skipped());
    assert_eq!(steps[1].command, "a 'x/#' --flag \\\n   --more");
    assert_eq!(steps[1].background.as_deref(), Some("broker"));
    assert_eq!(
        steps[2].command,
        "cat > f <<'EOF'\nline # not a comment\nEOF"
    );
    assert!(steps[3].until_ctrl_c && steps[3].fails.is_none());
    let expects: Vec<(&str, Stream, Option<&str>)> = steps[3]
        .expects
        .iter()
        .map(|e| (e.who.as_str(), e.stream, e.text.as_deref()))
        .collect();
    assert_eq!(
        expects,
        [
            ("alice", Stream::Stdout, Some("t [p] 21.5 C")),
            ("eve", Stream::Stdout, None),
            ("eve", Stream::Stderr, Some("rejected t: why (kind)")),
            ("run", Stream::Stderr, Some("granted alice")),
        ]
    );
    assert_eq!(steps[4].fails.as_deref(), Some("revoked"));
}
