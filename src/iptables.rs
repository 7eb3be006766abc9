//! `outrigger iptables`: the nat rules that send a pod's traffic through its sidecar (the role
//! of linkerd-proxy-init and istio-iptables). Inbound TCP (PREROUTING) is redirected to the
//! inbound listener, outbound TCP (OUTPUT) to the outbound listener, except:
//! - anything the proxy itself sends (`--proxy-uid`, and `--proxy-gid` when given): the rule
//!   that lets it pass comes first in the outbound chain, so the proxy's own upstream
//!   connections can never be captured back into it, whatever else is configured;
//! - loopback destinations, the proxy's own ports, and the ports and networks excluded.
//!
//! The rules are written as one `iptables-restore --noflush` transaction into chains of their
//! own (`OUTRIGGER_*`), so applying them is atomic and `--clean` removes exactly them.

use crate::config::Cidr;
use std::io::Write;
use std::process::{Command, Stdio};

/// The chains this module owns.
pub const CHAINS: [&str; 4] = [
    "OUTRIGGER_INBOUND",
    "OUTRIGGER_IN_REDIRECT",
    "OUTRIGGER_OUTPUT",
    "OUTRIGGER_REDIRECT",
];

/// What to capture and what to leave alone.
#[derive(Clone, Debug)]
pub struct CaptureRules {
    /// The uid the proxy runs as: its traffic is never captured.
    pub proxy_uid: u32,
    /// The proxy's gid, also excluded when set.
    pub proxy_gid: Option<u32>,
    /// The transparent inbound listener's port.
    pub inbound_port: u16,
    /// The transparent outbound listener's port.
    pub outbound_port: u16,
    /// Inbound ports to capture; empty captures every port.
    pub inbound_ports: Vec<u16>,
    /// Inbound ports never captured (ssh, a health port the kubelet probes directly).
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports never captured.
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destination networks never captured.
    pub exclude_outbound_cidrs: Vec<Cidr>,
    /// IPv6 (`ip6tables`) rather than IPv4.
    pub ipv6: bool,
}

impl CaptureRules {
    /// The `iptables-restore --noflush` input for the nat table.
    pub fn restore_script(&self) -> String {
        let mut out = String::from("*nat\n");
        for c in CHAINS {
            out.push_str(&format!(":{c} - [0:0]\n"));
        }
        let mut rule = |r: String| {
            out.push_str(&r);
            out.push('\n');
        };
        rule(format!(
            "-A OUTRIGGER_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
            self.inbound_port
        ));
        rule(format!(
            "-A OUTRIGGER_REDIRECT -p tcp -j REDIRECT --to-ports {}",
            self.outbound_port
        ));
        rule("-A PREROUTING -p tcp -j OUTRIGGER_INBOUND".into());
        rule("-A OUTPUT -p tcp -j OUTRIGGER_OUTPUT".into());
        // Inbound: the proxy's own ports and the excluded ones pass; then capture.
        let mut passing = vec![self.inbound_port, self.outbound_port];
        passing.extend(&self.exclude_inbound_ports);
        for p in dedup(passing) {
            rule(format!("-A OUTRIGGER_INBOUND -p tcp --dport {p} -j RETURN"));
        }
        if self.inbound_ports.is_empty() {
            rule("-A OUTRIGGER_INBOUND -p tcp -j OUTRIGGER_IN_REDIRECT".into());
        }
        for p in dedup(self.inbound_ports.clone()) {
            rule(format!(
                "-A OUTRIGGER_INBOUND -p tcp --dport {p} -j OUTRIGGER_IN_REDIRECT"
            ));
        }
        // Outbound: the proxy's own traffic first, so nothing below can loop it back.
        rule(format!(
            "-A OUTRIGGER_OUTPUT -m owner --uid-owner {} -j RETURN",
            self.proxy_uid
        ));
        if let Some(gid) = self.proxy_gid {
            rule(format!(
                "-A OUTRIGGER_OUTPUT -m owner --gid-owner {gid} -j RETURN"
            ));
        }
        let loopback = if self.ipv6 { "::1/128" } else { "127.0.0.0/8" };
        rule(format!("-A OUTRIGGER_OUTPUT -d {loopback} -j RETURN"));
        for p in dedup(self.exclude_outbound_ports.clone()) {
            rule(format!("-A OUTRIGGER_OUTPUT -p tcp --dport {p} -j RETURN"));
        }
        for c in &self.exclude_outbound_cidrs {
            if c.network.is_ipv6() == self.ipv6 {
                rule(format!("-A OUTRIGGER_OUTPUT -d {c} -j RETURN"));
            }
        }
        rule("-A OUTRIGGER_OUTPUT -j OUTRIGGER_REDIRECT".into());
        out.push_str("COMMIT\n");
        out
    }

    /// Applies the rules in one transaction, after removing any earlier ones (so applying
    /// twice leaves one set, not two).
    pub fn apply(&self) -> Result<(), IptablesError> {
        clean(self.ipv6)?;
        let program = restore_program(self.ipv6);
        let mut child = Command::new(program)
            .arg("--noflush")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| IptablesError::Spawn {
                program: program.into(),
                source: e,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(self.restore_script().as_bytes())
                .map_err(|e| IptablesError::Spawn {
                    program: program.into(),
                    source: e,
                })?;
        }
        let out = child.wait_with_output().map_err(|e| IptablesError::Spawn {
            program: program.into(),
            source: e,
        })?;
        if !out.status.success() {
            return Err(IptablesError::Failed {
                command: format!("{program} --noflush"),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(())
    }
}

/// The commands that remove the rules: the jumps into our chains, then the chains.
pub fn clean_commands(ipv6: bool) -> Vec<Vec<String>> {
    let program = if ipv6 { "ip6tables" } else { "iptables" };
    let cmd = |args: &str| {
        std::iter::once(program.to_string())
            .chain(args.split(' ').map(str::to_string))
            .collect::<Vec<_>>()
    };
    let mut out = vec![
        cmd("-t nat -D PREROUTING -p tcp -j OUTRIGGER_INBOUND"),
        cmd("-t nat -D OUTPUT -p tcp -j OUTRIGGER_OUTPUT"),
    ];
    for c in CHAINS {
        out.push(cmd(&format!("-t nat -F {c}")));
    }
    for c in CHAINS {
        out.push(cmd(&format!("-t nat -X {c}")));
    }
    out
}

/// Runs `clean_commands`; a rule or chain already gone is not an error (cleaning twice is
/// harmless).
pub fn clean(ipv6: bool) -> Result<(), IptablesError> {
    for args in clean_commands(ipv6) {
        let out = Command::new(&args[0])
            .args(&args[1..])
            .output()
            .map_err(|e| IptablesError::Spawn {
                program: args[0].clone(),
                source: e,
            })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let absent = stderr.contains("No chain")
            || stderr.contains("does not exist")
            || stderr.contains("Bad rule");
        if !out.status.success() && !absent {
            return Err(IptablesError::Failed {
                command: args.join(" "),
                stderr: stderr.trim().to_owned(),
            });
        }
    }
    Ok(())
}

fn restore_program(ipv6: bool) -> &'static str {
    if ipv6 {
        "ip6tables-restore"
    } else {
        "iptables-restore"
    }
}

fn dedup(mut v: Vec<u16>) -> Vec<u16> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|p| seen.insert(*p));
    v
}

/// Why the rules could not be written or removed.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    /// The program could not be run (not installed?).
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program refused.
    #[error("{command} failed: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// What it said.
        stderr: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> CaptureRules {
        CaptureRules {
            proxy_uid: 65532,
            proxy_gid: None,
            inbound_port: 15006,
            outbound_port: 15001,
            inbound_ports: vec![],
            exclude_inbound_ports: vec![22],
            exclude_outbound_ports: vec![5432],
            exclude_outbound_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
            ipv6: false,
        }
    }

    #[test]
    fn the_proxys_own_traffic_passes_before_any_capture_rule() {
        let script = rules().restore_script();
        let lines: Vec<&str> = script.lines().collect();
        let first_output = lines
            .iter()
            .position(|l| l.starts_with("-A OUTRIGGER_OUTPUT"))
            .unwrap();
        assert_eq!(
            lines[first_output],
            "-A OUTRIGGER_OUTPUT -m owner --uid-owner 65532 -j RETURN"
        );
        let redirect = lines
            .iter()
            .position(|l| *l == "-A OUTRIGGER_OUTPUT -j OUTRIGGER_REDIRECT")
            .unwrap();
        assert!(first_output < redirect);
        assert_eq!(lines.last(), Some(&"COMMIT"));
        assert!(script.contains("-A OUTRIGGER_INBOUND -p tcp --dport 15006 -j RETURN"));
        assert!(script.contains("-A OUTRIGGER_INBOUND -p tcp --dport 22 -j RETURN"));
        assert!(script.contains("-A OUTRIGGER_OUTPUT -d 10.96.0.0/12 -j RETURN"));
        assert!(script.contains("-A OUTRIGGER_OUTPUT -p tcp --dport 5432 -j RETURN"));
    }

    #[test]
    fn clean_removes_the_jumps_before_the_chains() {
        let cmds = clean_commands(false);
        assert_eq!(
            cmds[0].join(" "),
            "iptables -t nat -D PREROUTING -p tcp -j OUTRIGGER_INBOUND"
        );
        assert_eq!(
            cmds.last().unwrap().join(" "),
            "iptables -t nat -X OUTRIGGER_REDIRECT"
        );
    }
}
