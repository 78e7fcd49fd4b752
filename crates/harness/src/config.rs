//! What a node's config file says: the settings every node of a cluster shares (`Opts`),
//! what is a node's own (`NodeSpec`, `Testing`), and the TOML written from them
//! (`node_toml`).
//!
//! Runs on the caller's thread (pure: text in, text out; `Cluster` writes the file). Must
//! not touch node internals: it knows the config format only as an operator does, from
//! `config/*.toml`.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use ringkv_raft::NodeId;

/// The settings every node of a cluster gets.
#[derive(Clone, Debug)]
pub struct Opts {
    /// The `[raft.persistence]` body.
    pub persistence: &'static str,
    pub election_ms: (u64, u64),
    pub heartbeat_ms: u64,
    pub lease_ms: u64,
    /// `raft.clock_drift_ppm_max`; the node's default when `None`.
    pub drift_ppm_max: Option<u32>,
    /// `raft.request_timeout_ms`; the node's default when `None`.
    pub request_timeout_ms: Option<u64>,
    /// The `[limits]` body.
    pub limits: &'static str,
    /// More TOML appended to every config (e.g. `[raft.snapshot]`): whole tables the
    /// other fields do not write. Built at run time by the campaign, hence not `&'static`.
    pub extra: Cow<'static, str>,
    /// `cluster.cluster_token` (always written, empty meaning none: tests edit the line).
    pub token: &'static str,
    /// Every node gets a `cluster.metrics_address` (from the cluster's `Listener::Metrics`
    /// addresses).
    pub metrics: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            persistence: "strategy = \"DiskFirst\"",
            election_ms: (300, 600),
            heartbeat_ms: 50,
            lease_ms: 200,
            drift_ppm_max: None,
            request_timeout_ms: None,
            limits: "",
            extra: Cow::Borrowed(""),
            token: "",
            metrics: false,
        }
    }
}

/// Which of a node's listeners an address is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// Its one port for peers, HTTP and native clients (`cluster.listen_address`).
    Node,
    /// `cluster.metrics_address` (`Opts::metrics`).
    Metrics,
}

/// What is a node's own beyond its id and addresses.
#[derive(Clone, Debug, Default)]
pub struct NodeSpec {
    /// Joins the founders as a learner: its `initial_cluster` is the founders plus itself
    /// (role 3, status 0). A founder's is the founders (role 1, status 2).
    pub joiner: bool,
    /// `[runtime]`: one shard executor on each of these CPUs, the raft core on the first;
    /// the node's default when `None`.
    pub cores: Option<Vec<usize>>,
    /// `[testing]` (fault-campaign builds only: others refuse the section).
    pub testing: Option<Testing>,
}

/// The `[testing]` keys of a `crash-sim` build.
#[derive(Clone, Debug, Default)]
pub struct Testing {
    /// The node's clock runs this much fast (positive) or slow.
    pub clock_rate_ppm: i32,
    /// Each fdatasync's writes stay in memory this long first.
    pub sync_delay_us: u64,
    /// Where this node dials each peer instead of its address (a link proxy).
    pub peer_dial: Vec<(NodeId, SocketAddr)>,
    /// Negative controls switched on.
    pub controls: Vec<String>,
}

/// Node `id`'s config: `founders` are the cluster's founders with their addresses (in id
/// order), `data_dir` its data directory.
pub fn node_toml(
    o: &Opts,
    id: NodeId,
    spec: &NodeSpec,
    address: SocketAddr,
    metrics_address: Option<SocketAddr>,
    founders: &[(NodeId, SocketAddr)],
    data_dir: &Path,
) -> String {
    let member = |id: NodeId, a: SocketAddr, role: u8, status: u8| {
        format!("{{ id = {id}, address = \"{a}\", role = {role}, status = {status} }}")
    };
    let mut members: Vec<String> = founders.iter().map(|(f, a)| member(*f, *a, 1, 2)).collect();
    if spec.joiner {
        members.push(member(id, address, 3, 0));
    }
    let mut t = String::new();
    // Writes to a String cannot fail.
    let _ = writeln!(
        t,
        "[cluster]\nnode_id = {id}\ncluster_token = \"{}\"",
        o.token
    );
    let _ = writeln!(t, "listen_address = \"{address}\"");
    if let Some(m) = metrics_address {
        let _ = writeln!(t, "metrics_address = \"{m}\"");
    }
    let _ = writeln!(t, "initial_cluster = [{}]", members.join(", "));
    let _ = writeln!(t, "data_dir = \"{}\"\n", data_dir.display());
    let _ = writeln!(
        t,
        "[raft]\nelection_timeout_min_ms = {}\nelection_timeout_max_ms = {}\n\
         heartbeat_interval_ms = {}",
        o.election_ms.0, o.election_ms.1, o.heartbeat_ms
    );
    if let Some(d) = o.drift_ppm_max {
        let _ = writeln!(t, "clock_drift_ppm_max = {d}");
    }
    if let Some(r) = o.request_timeout_ms {
        let _ = writeln!(t, "request_timeout_ms = {r}");
    }
    let _ = writeln!(
        t,
        "\n[raft.read_consistency]\nlease_duration_ms = {}\n",
        o.lease_ms
    );
    let _ = writeln!(t, "[raft.persistence]\n{}\n", o.persistence);
    let _ = writeln!(t, "[limits]\n{}\n", o.limits);
    if let Some(cores) = spec.cores.as_ref().filter(|c| !c.is_empty()) {
        let list: Vec<String> = cores.iter().map(|c| c.to_string()).collect();
        let _ = writeln!(
            t,
            "[runtime]\ncores = [{}]\nraft_core = {}\n",
            list.join(", "),
            cores[0]
        );
    }
    if let Some(x) = &spec.testing {
        let dial: Vec<String> = x
            .peer_dial
            .iter()
            .map(|(peer, a)| format!("\"{peer}\" = \"{a}\""))
            .collect();
        let controls: Vec<String> = x.controls.iter().map(|c| format!("\"{c}\"")).collect();
        let _ = writeln!(
            t,
            "[testing]\nclock_rate_ppm = {}\nsync_delay_us = {}\npeer_dial = {{ {} }}\n\
             controls = [{}]\n",
            x.clock_rate_ppm,
            x.sync_delay_us,
            dial.join(", "),
            controls.join(", ")
        );
    }
    t.push_str(&o.extra);
    t.push('\n');
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Node `id`'s config as a joiner on 127.0.0.1:(1000 + id), metrics on (2000 + id).
    fn joiner_toml(
        o: &Opts,
        id: NodeId,
        spec: NodeSpec,
        founders: &[(NodeId, SocketAddr)],
    ) -> String {
        let spec = NodeSpec {
            joiner: true,
            ..spec
        };
        let (a, m) = (1000 + id, 2000 + id);
        let (a, m) = (
            addr(&format!("127.0.0.1:{a}")),
            addr(&format!("127.0.0.1:{m}")),
        );
        node_toml(
            o,
            id,
            &spec,
            a,
            Some(m),
            founders,
            Path::new(&format!("/d/db/{id}")),
        )
    }

    #[test]
    fn a_founder_lists_the_founders_and_a_joiner_itself_as_a_learner() {
        let founders = [(1, addr("127.0.0.1:1001")), (2, addr("127.0.0.1:1002"))];
        let o = Opts::default();
        let f = node_toml(
            &o,
            1,
            &NodeSpec::default(),
            founders[0].1,
            None,
            &founders,
            Path::new("/d/db/1"),
        );
        assert!(f.contains(
            "initial_cluster = [{ id = 1, address = \"127.0.0.1:1001\", role = 1, status = 2 }, \
             { id = 2, address = \"127.0.0.1:1002\", role = 1, status = 2 }]\n"
        ));
        assert!(
            f.contains("cluster_token = \"\"\n"),
            "tests edit this line: {f}"
        );
        assert!(
            !f.contains("metrics_address") && !f.contains("[testing]"),
            "{f}"
        );
        let j = joiner_toml(&o, 3, NodeSpec::default(), &founders);
        assert!(j.contains(
            "{ id = 2, address = \"127.0.0.1:1002\", role = 1, status = 2 }, \
             { id = 3, address = \"127.0.0.1:1003\", role = 3, status = 0 }]"
        ));
        assert!(j.contains("metrics_address = \"127.0.0.1:2003\"\n"), "{j}");
    }

    #[test]
    fn the_campaign_keys_are_written_where_the_node_reads_them() {
        let o = Opts {
            drift_ppm_max: Some(50_000),
            request_timeout_ms: Some(2000),
            extra: format!("[raft.snapshot]\ninterval_entries = {}\n", 4000).into(),
            ..Opts::default()
        };
        let spec = NodeSpec {
            joiner: false,
            cores: Some(vec![1]),
            testing: Some(Testing {
                clock_rate_ppm: -290_000,
                sync_delay_us: 2000,
                peer_dial: vec![(2, addr("127.1.1.2:7000"))],
                controls: vec!["lease_ignores_drift".into()],
            }),
        };
        let a = addr("127.0.0.11:7000");
        let t = node_toml(&o, 1, &spec, a, None, &[(1, a)], Path::new("db/1"));
        let raft = &t[t.find("[raft]").unwrap()..t.find("[raft.read_consistency]").unwrap()];
        assert!(raft.contains("clock_drift_ppm_max = 50000\nrequest_timeout_ms = 2000\n"));
        assert!(t.contains("[runtime]\ncores = [1]\nraft_core = 1\n"), "{t}");
        assert!(
            t.contains(
                "[testing]\nclock_rate_ppm = -290000\nsync_delay_us = 2000\n\
                 peer_dial = { \"2\" = \"127.1.1.2:7000\" }\ncontrols = [\"lease_ignores_drift\"]\n"
            ),
            "{t}"
        );
        assert!(
            t.ends_with("[raft.snapshot]\ninterval_entries = 4000\n\n"),
            "{t}"
        );
    }

    #[test]
    fn what_it_writes_the_node_parses_as_meant() {
        use ringkv_server::config::NodeConfig;
        let founders: Vec<(NodeId, SocketAddr)> = (1..=3)
            .map(|i| (i, addr(&format!("127.0.0.1:{}", 1000 + i))))
            .collect();
        let o = Opts {
            persistence: "strategy = \"MemFirst\"\n\
                          flush_policy = { Batch = { threshold = 100, interval_ms = 20 } }",
            limits: "connections_max = 4",
            token: "s3cret",
            drift_ppm_max: Some(60_000),
            request_timeout_ms: Some(2500),
            extra: "[raft.snapshot]\ninterval_entries = 500\n".into(),
            ..Opts::default()
        };
        let spec = NodeSpec {
            cores: Some(vec![0, 1]),
            ..NodeSpec::default()
        };
        let text = joiner_toml(&o, 4, spec, &founders);
        let c = NodeConfig::parse(&text, "n4.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(c.is_joiner());
        assert_eq!(c.founders(), founders);
        assert_eq!(c.members().len(), 4);
        assert_eq!(c.cluster.cluster_token, "s3cret");
        assert_eq!(c.cluster.metrics_address.as_deref(), Some("127.0.0.1:2004"));
        assert_eq!(c.data_dir(), Path::new("/d/db/4"));
        assert_eq!(c.raft.request_timeout_ms, 2500);
        assert_eq!(c.raft.clock_drift_ppm_max, 60_000);
        assert_eq!(c.raft.snapshot.interval_entries, 500);
        assert_eq!(c.limits.connections_max, 4);
        assert_eq!(
            (c.runtime.cores.clone(), c.runtime.raft_core),
            (vec![0, 1], 0)
        );
    }
}
