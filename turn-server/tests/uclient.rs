//! Interop with a standard TURN client: coturn's `turnutils_uclient` (Debian package `coturn`,
//! installed by scripts/test) runs client-to-client sessions through concord-turn over UDP,
//! TCP and TLS, with channels and with Send indications, with a static user and with TURN REST
//! credentials it derives from the shared secret itself. Every message must come back.

mod common;

use std::time::Duration;

use common::*;

const MESSAGES: usize = 20;
const CLIENTS: usize = 4;

/// Runs uclient and returns (sent, received, lost-line) from its summary.
async fn uclient(args: &[String]) -> (usize, usize, String) {
    let mut cmd = tokio::process::Command::new("turnutils_uclient");
    // -y: clients relay to each other (no external peer); -c: no RTCP pair (EVEN-PORT with the
    // R bit, which concord-turn answers with 508 as RFC 8656 §7.2 allows).
    cmd.args(["-y", "-c", "-l", "160"])
        .args(["-n", &MESSAGES.to_string(), "-m", &CLIENTS.to_string()])
        .args(args)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("uclient finishes")
        .expect("turnutils_uclient runs (Debian package coturn; scripts/test installs it)");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    let totals = text
        .lines()
        .find(|l| l.contains("start_mclient: tot_send_msgs="))
        .unwrap_or_else(|| panic!("no totals in uclient output:\n{text}"));
    let number = |key: &str| -> usize {
        let start = totals.find(key).expect("key") + key.len();
        totals[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .expect("a count")
    };
    let lost = text
        .lines()
        .find(|l| l.contains("Total lost packets"))
        .unwrap_or_default()
        .to_owned();
    (number("tot_send_msgs="), number("tot_recv_msgs="), lost)
}

fn expect_all_delivered((sent, received, lost): (usize, usize, String), what: &str) {
    assert_eq!(sent, MESSAGES * CLIENTS, "{what}: every message sent");
    assert_eq!(received, sent, "{what}: every message came back ({lost})");
    assert!(lost.contains("Total lost packets 0 "), "{what}: {lost}");
}

#[tokio::test]
async fn coturn_uclient_relays_through_concord_turn() {
    let s = start(|_| {}).await;
    let udp_port = s.udp_addr().port().to_string();
    let tls_port = s.tls_addr().expect("tls").port().to_string();
    let static_user = |extra: &[&str], port: &str| -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend(["-u", "ana", "-w", "pw", "-p", port, "127.0.0.1"].map(String::from));
        v
    };

    expect_all_delivered(uclient(&static_user(&[], &udp_port)).await, "UDP, channels");
    expect_all_delivered(
        uclient(&static_user(&["-s"], &udp_port)).await,
        "UDP, Send indications",
    );
    expect_all_delivered(uclient(&static_user(&["-t"], &udp_port)).await, "TCP");
    expect_all_delivered(uclient(&static_user(&["-t", "-S"], &tls_port)).await, "TLS");
    // TURN REST: uclient builds `expiry:user` and the HMAC-SHA1 password from the secret.
    let rest: Vec<String> = ["-u", "carol", "-W", SECRET, "-p", &udp_port, "127.0.0.1"]
        .map(String::from)
        .to_vec();
    expect_all_delivered(uclient(&rest).await, "UDP, TURN REST credentials");

    // A wrong password relays nothing, and the server counts the failures.
    let failures_before: u64 = s.stats().auth_failures.iter().sum();
    let wrong: Vec<String> = ["-u", "ana", "-w", "nope", "-p", &udp_port, "127.0.0.1"]
        .map(String::from)
        .to_vec();
    let mut cmd = tokio::process::Command::new("turnutils_uclient");
    cmd.args(["-y", "-c", "-n", "2", "-m", "1"])
        .args(&wrong)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("uclient finishes")
        .expect("uclient runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !text.contains("tot_recv_msgs=2"),
        "nothing relayed with a wrong password:\n{text}"
    );
    let failures_after: u64 = s.stats().auth_failures.iter().sum();
    assert!(failures_after > failures_before, "auth failures counted");
}
