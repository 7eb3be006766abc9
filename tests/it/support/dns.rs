//! A real DNS server for discovery tests: Debian's dnsmasq on 127.0.0.1, serving A records
//! from a hosts file (changed with SIGHUP, no outage) and SRV records from its config file
//! (changed by restarting it on the same port).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Dnsmasq {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Dnsmasq {
    /// Starts dnsmasq with `hosts` (name, address) and `srv` records
    /// (`_http._tcp.web.test,target,port,priority,weight`); `None` when dnsmasq is missing
    /// outside CI (the test is then skipped).
    pub fn start(hosts: &[(&str, IpAddr)], srv: &[String]) -> Option<Dnsmasq> {
        // Debian puts it in /usr/sbin, which a non-root PATH may not list.
        let sbin = PathBuf::from("/usr/sbin/dnsmasq");
        let bin = if sbin.is_file() {
            sbin
        } else {
            super::tool("dnsmasq")?
        };
        let dir = super::temp_dir("dns");
        let mut d = Dnsmasq {
            bin,
            dir,
            port: 0,
            child: None,
        };
        d.write_hosts(hosts);
        // dnsmasq takes the port for UDP and TCP; another test may hold the TCP side of a
        // port that was free for UDP, so a failed start tries another port.
        for _ in 0..5 {
            d.port = free_port();
            d.write_conf(srv);
            if d.spawn() {
                return Some(d);
            }
        }
        panic!("dnsmasq did not start; see {}", d.dir.join("log").display());
    }

    pub fn resolver(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn write_hosts(&self, hosts: &[(&str, IpAddr)]) {
        let text: String = hosts.iter().map(|(n, a)| format!("{a} {n}\n")).collect();
        super::write_atomic(&self.dir.join("hosts"), &text);
    }

    fn write_conf(&self, srv: &[String]) {
        let mut conf = format!(
            "port={}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\nno-poll\nuser=root\npid-file=\nlocal-ttl=0\naddn-hosts={}\n",
            self.port,
            self.dir.join("hosts").display()
        );
        for s in srv {
            conf.push_str(&format!("srv-host={s}\n"));
        }
        std::fs::write(self.dir.join("dnsmasq.conf"), conf).expect("write dnsmasq.conf");
    }

    /// Starts dnsmasq; false if it exited instead of binding its port.
    fn spawn(&mut self) -> bool {
        let child = Command::new(&self.bin)
            .arg("--keep-in-foreground")
            .arg(format!(
                "--conf-file={}",
                self.dir.join("dnsmasq.conf").display()
            ))
            .arg(format!("--log-facility={}", self.dir.join("log").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq");
        self.child = Some(child);
        // Up once its port is taken.
        let end = Instant::now() + Duration::from_secs(5);
        while std::net::UdpSocket::bind(("127.0.0.1", self.port)).is_ok() {
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited {
                self.child = None;
                return false;
            }
            assert!(
                Instant::now() < end,
                "dnsmasq did not bind port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Replaces the A records without a restart (dnsmasq re-reads hosts files on SIGHUP).
    pub fn set_hosts(&self, hosts: &[(&str, IpAddr)]) {
        self.write_hosts(hosts);
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args(["-HUP", &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "SIGHUP to dnsmasq");
        }
    }

    /// Replaces the SRV records (restarts the server on the same port).
    pub fn set_srv(&mut self, srv: &[String]) {
        self.stop();
        self.write_conf(srv);
        assert!(self.spawn(), "dnsmasq restarts on port {}", self.port);
    }

    /// Stops the server (a DNS outage).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port free for both TCP and UDP on 127.0.0.1 right now.
fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
