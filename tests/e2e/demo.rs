//! The demo as the README's newcomer runs it: the binary, no config and no database of their
//! own, ending by itself once every parcel is final and every webhook delivered, and summing up.

use crate::support::shipwatch;

/// `N label` pairs of a summary line, as `5 delivered, 1 returned`.
fn counted(text: &str) -> Vec<(u64, String)> {
    text.split(", ")
        .map(|part| {
            let (n, label) = part.split_once(' ').expect("a count and a label");
            (n.parse().expect("a count"), label.to_owned())
        })
        .collect()
}

#[test]
fn the_demo_tracks_every_parcel_to_the_end_and_sums_it_up() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let run = |args: &[&str]| {
        shipwatch()
            .args(args)
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .output()
            .expect("shipwatch runs")
    };
    let out = run(&["demo", "--shipments", "6", "--db", db.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let all = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert!(
        !stdout.contains("time is up"),
        "the demo ran out its minute instead of ending by itself: {all}"
    );
    let line = |label: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} line in the summary: {all}"))
            .trim()
            .to_owned()
    };
    // Every parcel reached a final status.
    let shipments = counted(&line("shipments "));
    assert!(
        shipments
            .iter()
            .all(|(_, status)| status == "delivered" || status == "returned"),
        "{all}"
    );
    assert_eq!(shipments.iter().map(|(n, _)| n).sum::<u64>(), 6, "{all}");
    // Every change was delivered, none is left waiting or given up.
    let notifications = counted(&line("notifications "));
    let [(sent, _), (pending, _), (dead, _)] = notifications[..] else {
        panic!("{all}")
    };
    assert!(sent >= 6, "a change at least a parcel: {all}");
    assert_eq!((pending, dead), (0, 0), "{all}");
    // Each request the receiver got was signed; the first were turned away and tried again.
    let webhook = line("webhook ");
    let requests: u64 = webhook.split(' ').next().unwrap().parse().unwrap();
    assert_eq!(
        webhook,
        format!("{requests} requests, {requests} with a valid signature, {sent} accepted"),
        "{all}"
    );
    assert!(requests > sent, "no delivery was retried: {all}");
    // The printout tells the story, the retries included: the logs, which would only repeat it,
    // show errors alone (at warnings, each retry's line came between the printout's lines).
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains(" WARN ") && !stderr.contains(" INFO "),
        "{stderr}"
    );
    // The database given stays, for a look around afterwards.
    let listed = run(&["--db", db.to_str().unwrap(), "list"]);
    assert!(listed.status.success());
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(
        listed.lines().filter(|l| l.starts_with("DEMO-")).count(),
        6,
        "{listed}"
    );
}
