//! The `lamina-relay` command line: bad flags, unreadable or invalid
//! configs and a port in use give one clear line and a non-zero exit,
//! never a panic or a backtrace.

use std::process::Command;

/// Run the relay binary with `args`; returns (exit code, stderr).
fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lamina-relay"))
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("the binary runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Assert a clean failure that mentions `needle`.
fn assert_clean_failure(args: &[&str], needle: &str) {
    let (code, stderr) = run(args);
    assert_ne!(code, 0, "{args:?} must fail");
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("stack backtrace"), "{args:?}: {stderr}");
}

#[test]
fn help_explains_every_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_lamina-relay")).arg("--help").output().expect("runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--data-dir",
        "--listen",
        "--seed",
        "--exit",
        "--exit-policy",
        "--metrics",
        "--config",
        "--pow-bits",
        "--epoch-secs",
        "--allow-private-exit",
        "--test-network",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
}

#[test]
fn bad_command_lines_and_configs_fail_cleanly() {
    let dir = std::env::temp_dir().join(format!("lamina-cli-{}", std::process::id()));
    let data = dir.join("data");
    let data = data.to_str().expect("utf-8 path");
    assert_clean_failure(&["--listen", "not-an-address", "--data-dir", data], "invalid value");
    assert_clean_failure(&["--listen", "127.0.0.1:0"], "missing setting: --data-dir");
    assert_clean_failure(
        &["--listen", "127.0.0.1:0", "--data-dir", data, "--exit-policy", "allow all"],
        "exit policy rule 1",
    );
    assert_clean_failure(&["--config", "/nonexistent/lamina.toml"], "cannot read config file");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "listen = 5\n").expect("write");
    assert_clean_failure(&["--config", bad.to_str().expect("utf-8")], "config file");
    assert_clean_failure(&["--listen", "127.0.0.1:0", "--data-dir", data, "--metrics", "0.0.0.0:0"], "non-loopback");
    // A port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    assert_clean_failure(&["--listen", &addr, "--data-dir", data], "cannot listen on");
    let _ = std::fs::remove_dir_all(&dir);
}
