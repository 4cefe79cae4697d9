//! The `lamina-client` command line fails cleanly: one line, non-zero exit.

use std::process::Command;

/// Run the client binary with `args`; returns (exit code, stderr).
fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lamina-client"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("the binary runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_command_lines_fail_cleanly() {
    for (args, needle) in [
        (vec!["proxy"], "at least one --seed"),
        (vec!["proxy", "--seed", "127.0.0.1:1", "--socks", "0.0.0.0:0"], "non-loopback"),
        (vec!["proxy", "--seed", "nonsense"], "invalid value"),
        (vec!["dir"], "--seed"),
        (vec!["frobnicate"], "unrecognized subcommand"),
        (vec!["proxy", "--config", "/nonexistent/x.toml"], "cannot read"),
    ] {
        let (code, stderr) = run(&args);
        assert_ne!(code, 0, "{args:?}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn an_unreachable_seed_is_one_clear_error() {
    // A port with nothing behind it on loopback: the fetch fails at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let (code, stderr) = run(&["dir", "--seed", &addr]);
    assert_ne!(code, 0);
    assert!(stderr.contains(&format!("seed {addr}")), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
