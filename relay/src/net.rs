//! The relay's tokio drivers (CONTRIBUTING.md P2): they move bytes between sockets
//! and the sans-IO cores of `lamina-proto`, nothing more.
//!
//! - [`listener`] accepts TCP connections (bounded) and runs the responder
//!   link handshake;
//! - [`setup`] dials (public addresses only outside a test network) and
//!   drives link handshakes; [`link::connect_relay`] and
//!   [`link::connect_seed`] open outbound links with it;
//! - [`link`] runs one link: a reader task that owns the link's circuit
//!   table, and a writer task that batches cells into Noise frames;
//! - [`exit`] opens exit streams (resolve, check the policy on every
//!   resolved address, connect with a time-out) and pumps their bytes;
//! - [`registry`] maps link ids and relay ids to the channels of live links;
//! - [`directory`] drives the gossip engine and serves snapshots;
//! - [`prober`] tests other relays' advertised addresses (spec §14.2);
//! - [`cmd`] holds the commands several modules send to the directory task.
//!
//! The modules depend on each other without cycles:
//! `cmd <- registry <- setup <- link <- listener`, `exit <- link`,
//! `setup <- prober <- directory -> link` (each arrow: "is used by").

pub mod cmd;
pub mod directory;
pub mod exit;
pub mod link;
pub mod listener;
pub mod prober;
pub mod registry;
pub mod setup;

#[cfg(test)]
mod tests {
    /// The driver modules and their sources.
    const MODULES: [(&str, &str); 8] = [
        ("cmd", include_str!("net/cmd.rs")),
        ("directory", include_str!("net/directory.rs")),
        ("exit", include_str!("net/exit.rs")),
        ("link", include_str!("net/link.rs")),
        ("listener", include_str!("net/listener.rs")),
        ("prober", include_str!("net/prober.rs")),
        ("registry", include_str!("net/registry.rs")),
        ("setup", include_str!("net/setup.rs")),
    ];

    /// The sibling modules `source` names (`super::m` or `crate::net::m`),
    /// outside its unit tests.
    fn uses(source: &str) -> Vec<&'static str> {
        let code = source.split("#[cfg(test)]").next().unwrap_or(source);
        MODULES
            .iter()
            .map(|(m, _)| *m)
            .filter(|m| code.contains(&format!("super::{m}::")) || code.contains(&format!("crate::net::{m}::")))
            .collect()
    }

    /// Issue 9 item 8: `relay/src/net` has no import cycle (a depth-first
    /// search over the modules' references finds no back edge).
    #[test]
    fn the_driver_modules_have_no_import_cycle() {
        fn visit(m: &'static str, path: &mut Vec<&'static str>, done: &mut Vec<&'static str>) {
            if done.contains(&m) {
                return;
            }
            assert!(!path.contains(&m), "import cycle: {} -> {m}", path.join(" -> "));
            path.push(m);
            let source = MODULES.iter().find(|(n, _)| *n == m).map_or("", |(_, s)| *s);
            for next in uses(source) {
                if next != m {
                    visit(next, path, done);
                }
            }
            path.pop();
            done.push(m);
        }
        let mut done = Vec::new();
        for (m, _) in MODULES {
            visit(m, &mut Vec::new(), &mut done);
        }
        // The check sees real edges (a broken parser would pass vacuously).
        assert!(uses(MODULES[3].1).contains(&"registry"), "link uses the registry");
    }
}
