use super::*;

const EXAMPLES: [(&str, &str); 2] = [
    ("cluster.toml", include_str!("../../examples/cluster.toml")),
    (
        "two-node-fencing.toml",
        include_str!("../../examples/two-node-fencing.toml"),
    ),
];

fn parse(text: &str) -> ClusterFile {
    toml::from_str(text).expect("example parses")
}

fn base() -> ClusterFile {
    parse(EXAMPLES[0].1)
}

fn problem_at(file: &ClusterFile) -> (String, Problem) {
    let error = file.validate("a").expect_err("must be rejected");
    (error.path, error.problem)
}

#[test]
fn every_example_parses_and_validates_for_both_nodes() {
    for (name, text) in EXAMPLES {
        let file = parse(text);
        for node in ["a", "b"] {
            let config = file
                .validate(node)
                .unwrap_or_else(|e| panic!("{name} for {node}: {e}"));
            assert_eq!(config.local.name, node);
            assert_ne!(config.peer.name, node);
        }
    }
    let witness = base().validate_witness().expect("witness config");
    assert_eq!(witness.lease, Duration::from_millis(1200));
    let fencing = parse(EXAMPLES[1].1).validate("a").expect("valid");
    assert!(
        matches!(fencing.quorum, QuorumMode::Fencing(ref f) if f.timeout == Duration::from_secs(5))
    );
    assert_eq!(
        fencing.timing.interval,
        Duration::from_millis(100),
        "default interval"
    );
    assert_eq!(
        fencing.timing.dead,
        Duration::from_millis(1200),
        "default dead time"
    );
    assert!(!fencing.auto_failback, "failback off by default");
}

#[test]
fn unknown_keys_are_rejected() {
    let text = format!("{}\nbogus = 1\n", EXAMPLES[0].1);
    assert!(toml::from_str::<ClusterFile>(&text).is_err());
    let text = EXAMPLES[0]
        .1
        .replace("lease_ms = 1200", "lease_ms = 1200\nleese = 1");
    assert!(toml::from_str::<ClusterFile>(&text).is_err());
}

#[test]
fn neither_witness_nor_fencing_needs_unsafe_unfenced() {
    let mut file = base();
    file.witness = None;
    assert_eq!(
        problem_at(&file),
        ("witness".to_string(), Problem::NoProtection)
    );
    file.unsafe_unfenced = true;
    assert_eq!(
        file.validate("a").expect("valid").quorum,
        QuorumMode::Unsafe
    );
}

#[test]
fn dead_time_must_exceed_twice_the_interval() {
    let mut file = base();
    file.timing.dead_ms = 200;
    let (path, problem) = problem_at(&file);
    assert_eq!(path, "timing.dead_ms");
    assert!(matches!(
        problem,
        Problem::TooSmall {
            value: 200,
            bound: 200,
            ..
        }
    ));
}

#[test]
fn with_fencing_the_dead_time_may_be_shorter_than_the_vip_lifetime() {
    // 10 ms heartbeats, 50 ms dead time, 1 s VIP: the standby fences (powers
    // off) the old node before claiming, so its address cannot linger.
    let mut fencing = parse(EXAMPLES[1].1);
    fencing.timing.interval_ms = 10;
    fencing.timing.warn_ms = 30;
    fencing.timing.dead_ms = 50;
    fencing.timing.initial_dead_ms = 1000;
    fencing.timing.clock_margin_ms = 10;
    let config = fencing
        .validate("a")
        .expect("fencing allows a short dead time");
    assert_eq!(config.timing.dead, Duration::from_millis(50));
    // The same timing with a witness is refused: a dead daemon's address
    // would outlive the dead time.
    let mut witness = base();
    witness.timing = fencing.timing.clone();
    assert!(witness.validate("a").is_err());
    // A dead time within margin + interval could never count a vote.
    fencing.timing.clock_margin_ms = 40;
    let (path, _) = problem_at(&fencing);
    assert_eq!(path, "timing.dead_ms");
}

#[test]
fn vip_lifetime_must_fit_inside_dead_time_and_lease() {
    let mut file = base();
    file.vip.lifetime_ms = 2000;
    file.witness.as_mut().expect("witness").lease_ms = 5000;
    let (path, problem) = problem_at(&file);
    assert_eq!(path, "vip.lifetime_ms");
    let bound = 1200 - 50 - 100;
    assert!(matches!(problem, Problem::TooLarge { value: 2000, bound: b, .. } if b == bound));

    let mut file = base();
    file.vip.lifetime_ms = 300;
    let expected = ("vip.lifetime_ms".to_string(), Problem::WholeSeconds(300));
    assert_eq!(problem_at(&file), expected);

    let mut file = base();
    file.witness.as_mut().expect("witness").lease_ms = 1000;
    let (path, problem) = problem_at(&file);
    assert_eq!(path, "witness.lease_ms");
    assert!(matches!(
        problem,
        Problem::TooSmall {
            value: 1000,
            bound: 1150,
            ..
        }
    ));
}

#[test]
fn node_and_link_errors_name_their_key() {
    let mut file = base();
    file.nodes[1].links.pop();
    assert_eq!(problem_at(&file).0, "nodes[1].links");

    let mut file = base();
    file.nodes[1].id = 1;
    assert_eq!(
        problem_at(&file),
        (
            "nodes[1].id".to_string(),
            Problem::Duplicate("1".to_string())
        )
    );

    let mut file = base();
    file.nodes[0].id = 0;
    assert_eq!(
        problem_at(&file),
        ("nodes[0].id".to_string(), Problem::ReservedId)
    );

    let mut file = base();
    file.nodes.pop();
    assert_eq!(
        problem_at(&file),
        ("nodes".to_string(), Problem::NodeCount(1))
    );

    let mut file = base();
    file.nodes[0].links = vec![];
    assert_eq!(problem_at(&file).0, "nodes[0].links");

    let file = base();
    let error = file.validate("c").expect_err("unknown node");
    assert_eq!(error.to_string(), "node: no node named c");
}

#[test]
fn key_must_be_hex_of_sane_length() {
    let mut file = base();
    file.key_hex = "zz".repeat(16);
    assert_eq!(problem_at(&file), ("key_hex".to_string(), Problem::Hex));
    file.key_hex = "ab".repeat(8);
    assert!(matches!(
        problem_at(&file).1,
        Problem::KeyLength { len: 8, .. }
    ));
}

#[test]
fn warn_and_initial_dead_are_bounded() {
    let mut file = base();
    file.timing.warn_ms = 1300;
    assert_eq!(problem_at(&file).0, "timing.warn_ms");
    let mut file = base();
    file.timing.initial_dead_ms = 100;
    assert_eq!(problem_at(&file).0, "timing.initial_dead_ms");
}

#[test]
fn fencing_command_must_not_be_empty() {
    let mut file = parse(EXAMPLES[1].1);
    file.fencing.as_mut().expect("fencing").command.clear();
    assert_eq!(
        problem_at(&file),
        ("fencing.command".to_string(), Problem::Empty)
    );
}
