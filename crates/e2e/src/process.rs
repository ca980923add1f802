//! Running a program with a deadline: its stdin fed from bytes (or none), its stdout and
//! stderr collected, and the program killed when it overruns, so a hung command fails the
//! test that ran it instead of hanging the whole suite.

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Pause between two checks of whether the program has ended.
const EXIT_POLL: Duration = Duration::from_millis(50);

/// Runs `command` with `stdin` (or none), collecting its output; kills it after `timeout`.
pub fn run_with_timeout(
    mut command: Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> anyhow::Result<Output> {
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Dropping the pipe afterwards closes it: the child sees the end of its input.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!(
                "{:?} did not finish within {} s",
                command.get_program(),
                timeout.as_secs()
            );
        }
        std::thread::sleep(EXIT_POLL);
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Reads `stream` to its end on a thread of its own, so that a child filling one pipe never
/// blocks while we wait on the other.
fn drain(stream: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut stream) = stream {
            let _ = stream.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// Everything the program said, stdout then stderr.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The last non-blank line the program said, for one-line failure messages.
pub fn last_line(output: &Output) -> String {
    text(output)
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .to_string()
}
