//! WeChat official-account template messages for buyers, through the real binary: the buyer's
//! OpenID comes in with `add --openid` or an `openid` CSV column, is refused in one line when it
//! cannot be one, and is shown masked like a phone number.

use crate::support::app::TestApp;

const OPENID: &str = "oia2TjuEGTNoeX76QEjQNrcURxG8";
const TID: u64 = 7_500_000_000_000_000_001;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openid_comes_in_checked_and_is_shown_masked() {
    let app = TestApp::start().await;
    app.cli_ok(&["add", &TID.to_string(), "--openid", OPENID]);
    let listed = app.shipments();
    assert_eq!(listed[0]["openid"], "oia****RxG8", "{listed:?}");
    let shown = app.shipment(&TID.to_string());
    assert_eq!(shown["shipment"]["openid"], "oia****RxG8", "{shown}");
    let table = app.cli_ok(&["show", &TID.to_string()]);
    assert!(table.contains("oia****RxG8"), "{table}");
    assert!(!table.contains(OPENID), "{table}");
    let revealed = app.cli_ok(&["show", &TID.to_string(), "--json", "--reveal"]);
    assert!(revealed.contains(OPENID), "{revealed}");

    // A shipment without one has no openid key at all in the JSON.
    app.cli_ok(&["add", &(TID + 1).to_string()]);
    let plain = app.shipment(&(TID + 1).to_string());
    assert!(plain["shipment"].get("openid").is_none(), "{plain}");

    for bad in ["has space", "oia2Tju/EG", "微信用户", &"o".repeat(129)] {
        let out = app.cli(&["add", &(TID + 2).to_string(), "--openid", bad]);
        assert!(!out.status.success(), "{bad:?} was taken");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("is not a WeChat OpenID"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(!stderr.contains(bad), "{stderr}");
    }

    let csv = app_file(
        &app,
        "with-openid.csv",
        &format!("order_id,openid\n{},{OPENID}\n", TID + 3),
    );
    app.cli_ok(&["import", &csv]);
    assert_eq!(
        app.shipment(&(TID + 3).to_string())["shipment"]["openid"],
        "oia****RxG8"
    );
}

/// Writes `text` to a file beside the app's config and returns its path.
fn app_file(app: &TestApp, name: &str, text: &str) -> String {
    let path = app.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}
