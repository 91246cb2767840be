//! A network namespace made for one test and removed when it is dropped, so tests never touch the
//! host's network and never send traffic off the machine.
//!
//! Needs root (`ip netns add`); CI runs as root.

use std::process::{Command, Output};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `berth-t<pid>-<n>` with loopback up.
    pub fn new() -> Netns {
        let name = format!(
            "berth-t{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        run_ok("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.exec_ok("ip", &["link", "set", "lo", "up"]);
        ns
    }

    /// A `Command` that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .expect("run ip netns exec")
    }

    pub fn exec_ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.exec(program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} in {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// PIDs of the processes whose network namespace is this one.
    pub fn pids(&self) -> Vec<u32> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output();
        match out {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl Drop for Netns {
    /// Kills whatever a test left running in the namespace (a fixture that panicked before its
    /// own cleanup, say), then deletes it. Every such process was started by this test.
    fn drop(&mut self) {
        for pid in self.pids() {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// Joins two namespaces with a veth pair, as two machines on one link: `a` gets `ip_a` and `b`
/// gets `ip_b` (CIDR notation, e.g. `192.168.250.1/24`). The pair is created straight inside the
/// namespaces and goes away with them.
pub fn connect(a: &Netns, b: &Netns, ip_a: &str, ip_b: &str) {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let (end_a, end_b) = (format!("vj{n}a"), format!("vj{n}b"));
    run_ok(
        "ip",
        &[
            "link", "add", &end_a, "netns", &a.name, "type", "veth", "peer", "name", &end_b,
            "netns", &b.name,
        ],
    );
    for (ns, end, ip) in [(a, &end_a, ip_a), (b, &end_b, ip_b)] {
        ns.exec_ok("ip", &["addr", "add", ip, "dev", end]);
        ns.exec_ok("ip", &["link", "set", end, "up"]);
    }
}

/// A namespace holding only a bridge: the switch several namespaces plug into, as machines on
/// one LAN. Its ports go away with it and with the namespaces plugged in.
pub struct Switch {
    ns: Netns,
}

impl Switch {
    pub fn new() -> Switch {
        let ns = Netns::new();
        ns.exec_ok("ip", &["link", "add", "br0", "type", "bridge"]);
        ns.exec_ok("ip", &["link", "set", "br0", "up"]);
        Switch { ns }
    }

    /// Plugs `node` in with address `ip` (CIDR notation) on a veth of its own.
    pub fn plug(&self, node: &Netns, ip: &str) {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let (node_end, switch_end) = (format!("vs{n}n"), format!("vs{n}s"));
        run_ok(
            "ip",
            &[
                "link",
                "add",
                &node_end,
                "netns",
                &node.name,
                "type",
                "veth",
                "peer",
                "name",
                &switch_end,
                "netns",
                &self.ns.name,
            ],
        );
        self.ns
            .exec_ok("ip", &["link", "set", &switch_end, "master", "br0"]);
        self.ns.exec_ok("ip", &["link", "set", &switch_end, "up"]);
        node.exec_ok("ip", &["addr", "add", ip, "dev", &node_end]);
        node.exec_ok("ip", &["link", "set", &node_end, "up"]);
    }
}

/// Whether `ip netns list` shows a namespace called `name`.
pub fn netns_exists(name: &str) -> bool {
    run_ok("ip", &["netns", "list"])
        .lines()
        .any(|line| line.split_whitespace().next() == Some(name))
}

pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
