//! Running helper programs with a bound on their run time.
//!
//! Tests must never hang on a stuck `rauc` call, so every command runs with a deadline: its output
//! is drained by two threads (a full pipe would otherwise block the child) while we poll for exit,
//! and a child past its deadline is killed and reaped.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::TestbedError;

/// How often we look at a child or a condition while waiting.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// What a finished command printed.
#[derive(Debug)]
pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// `program arg arg ...` for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `cmd` to completion or until `timeout`, capturing stdout and stderr. A non-zero exit is not
/// an error here; [`run_checked`] makes it one.
pub(crate) fn run(cmd: &mut Command, timeout: Duration) -> Result<Finished, TestbedError> {
    let command = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| TestbedError::Spawn {
            program: cmd.get_program().to_string_lossy().into_owned(),
            source,
        })?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());

    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
            // Past the deadline, or the child cannot be waited for: either way it must go.
            Ok(None) | Err(_) => break None,
        }
    };
    let Some(status) = status else {
        kill_and_reap(&mut child);
        return Err(TestbedError::Timeout {
            command,
            timeout,
            stdout: join(stdout),
            stderr: join(stderr),
        });
    };
    Ok(Finished {
        status,
        stdout: join(stdout),
        stderr: join(stderr),
    })
}

/// Like [`run`], but a non-zero exit becomes [`TestbedError::Command`] carrying the program's own
/// explanation.
pub(crate) fn run_checked(cmd: &mut Command, timeout: Duration) -> Result<Finished, TestbedError> {
    let command = describe(cmd);
    let finished = run(cmd, timeout)?;
    if finished.status.success() {
        return Ok(finished);
    }
    Err(TestbedError::Command {
        command,
        status: finished.status.to_string(),
        message: failure_message(&finished.stdout, &finished.stderr),
        stdout: finished.stdout,
        stderr: finished.stderr,
    })
}

/// Kills a child we own and waits for it, so that it leaves neither a process nor a zombie.
pub(crate) fn kill_and_reap(child: &mut Child) {
    // Both can only fail if the child is already gone and reaped, which is what we want anyway.
    let _ = child.kill();
    let _ = child.wait();
}

/// RAUC's CLI prints the service's error as `LastError: <message>` on stdout and a summary on
/// stderr; the former says *why*, so prefer it.
fn failure_message(stdout: &str, stderr: &str) -> String {
    if let Some(last_error) = stdout
        .lines()
        .chain(stderr.lines())
        .find_map(|line| line.trim().strip_prefix("LastError:"))
    {
        return last_error.trim().to_owned();
    }
    stderr
        .lines()
        .chain(stdout.lines())
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("(no output)")
        .to_owned()
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> Option<thread::JoinHandle<String>> {
    pipe.map(|mut pipe| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            // A read error just ends the capture early; the exit status still tells the story.
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    })
}

fn join(handle: Option<thread::JoinHandle<String>>) -> String {
    handle
        .and_then(|handle| handle.join().ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_error_wins_over_stderr_summary() {
        let stdout = "installing\n100% Installing failed.\nLastError: Compatible mismatch\nidle\n";
        let stderr = "Installing `/x.raucb` failed\n";
        assert_eq!(failure_message(stdout, stderr), "Compatible mismatch");
    }

    #[test]
    fn falls_back_to_last_stderr_line() {
        assert_eq!(failure_message("", "first\nsecond\n\n"), "second");
        assert_eq!(failure_message("", ""), "(no output)");
    }

    #[test]
    fn slow_command_is_killed() {
        let err = run(Command::new("sleep").arg("30"), Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, TestbedError::Timeout { .. }), "{err}");
    }
}
