//! The README's "Two commands" section, run as written: the demo (`cargo run --release --
//! demo`, here the binary this test suite built, which is the same program in the test
//! profile), then every `curl` the README says to try against it, then Ctrl-C. The other
//! command, `cargo test`, is what `.ci/run` runs.

use crate::support::eventually;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The shell lines of each fenced `sh` block of the section `heading`, comments removed.
fn section_commands(readme: &str, heading: &str) -> Vec<Vec<String>> {
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .expect("the section is in the README");
    let mut blocks = Vec::new();
    let mut open: Option<Vec<String>> = None;
    for line in section.lines() {
        match (&mut open, line.trim()) {
            (None, "```sh") => open = Some(Vec::new()),
            (Some(_), "```") => blocks.push(open.take().unwrap()),
            (Some(b), l) => {
                let cmd = l.split(" #").next().unwrap_or("").trim();
                if !cmd.is_empty() {
                    b.push(cmd.to_owned());
                }
            }
            _ => {}
        }
    }
    blocks
}

/// The demo process, stopped (by PID) if the test ends early.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_demo_runs_and_answers_every_command_it_lists() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let blocks = section_commands(&readme, "Two commands");
    assert_eq!(
        blocks[0],
        ["cargo run --release -- demo", "cargo test"],
        "the two commands changed: update this test"
    );
    let mut demo = Reaped(
        Command::new(env!("CARGO_BIN_EXE_outrigger"))
            .arg("demo")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = demo.0.id().to_string();
    let ready = "http://127.0.0.1:9901/ready";
    eventually(Duration::from_secs(30), "the demo ready", || async move {
        let out = Command::new("curl")
            .args(["-s", "-m", "1", ready])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .contains("ready")
            .then_some(())
    })
    .await;
    let tries = &blocks[1];
    assert!(
        tries.len() >= 4 && tries.iter().all(|c| c.starts_with("curl ")),
        "{tries:?}"
    );
    for cmd in tries {
        let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && !text.trim().is_empty(),
            "{cmd}: {text}"
        );
    }
    // The README: Ctrl-C (SIGINT) drains and exits 0.
    let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(sent.success());
    let status = eventually(Duration::from_secs(30), "the demo to exit", || {
        let s = demo.0.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert!(status.success(), "{status:?}");
}
