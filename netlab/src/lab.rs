//! The lab's network: `lab.sh` builds it, `Lab` tears it down when dropped (also when a
//! test panics), and `in_netns` runs a closure on a thread inside one of its namespaces
//! (setns is per thread). `Lab::up()` takes a prefix unique to this process.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

/// The hosts `lab.sh` creates, behind their NATs (see the script's header).
pub const PUBLIC_IP: &str = "60.0.0.10";

/// A built lab; removed on drop.
pub struct Lab {
    prefix: String,
    script: PathBuf,
}

impl Lab {
    /// Builds the lab under a prefix unique to this process.
    pub fn up() -> anyhow::Result<Lab> {
        if !rustix::process::geteuid().is_root() {
            bail!("the NAT lab needs root (network namespaces, iptables); CI runs as root");
        }
        let lab = Lab {
            prefix: format!("nl{}", std::process::id()),
            script: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("lab.sh"),
        };
        lab.script(&["up", &lab.prefix])?;
        Ok(lab)
    }

    fn script(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = Command::new(&self.script)
            .args(args)
            .output()
            .with_context(|| format!("running {}", self.script.display()))?;
        if !out.status.success() {
            bail!(
                "lab.sh {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The namespace of a host (`pub`, `eim1`, `sym2`, `lan1`, …).
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// Drops `percent` % of the packets the hosts' NAT routers forward (0 removes it).
    pub fn set_loss(&self, percent: u8, hosts: &[&str]) -> anyhow::Result<()> {
        let percent = percent.to_string();
        let mut args = vec!["loss", &self.prefix, &percent];
        args.extend_from_slice(hosts);
        self.script(&args)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.script(&["down", &self.prefix]);
    }
}

/// Runs `f` on a new thread that has entered network namespace `ns` (a thread's network
/// namespace is its own, so the rest of the process stays where it is). Sockets `f` opens
/// live in that namespace.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    std::thread::spawn(move || -> anyhow::Result<T> {
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .context("setns into the lab namespace")?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
}
