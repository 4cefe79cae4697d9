//! Replays every kept `regressions/relay_table-*` input through the `relay_table`
//! fuzz target, so `cargo test` (in this directory, on stable) checks
//! that none of the bugs they found returns.

// The target's entry point is only reachable through the symbol the
// `fuzz_target!` macro exports, as libFuzzer itself calls it.
#![allow(unsafe_code, unused_attributes)]

#[path = "../fuzz_targets/relay_table.rs"]
mod target;

extern "C" {
    #[allow(improper_ctypes)]
    fn rust_fuzzer_test_input(input: &[u8]) -> i32;
}

#[test]
fn kept_regressions_run_without_a_panic() {
    // Strict mode adds the protocol-property checks some regressions need.
    std::env::set_var("LAMINA_FUZZ_STRICT", "1");
    let mut replayed = 0;
    for entry in std::fs::read_dir("regressions").expect("regressions directory") {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if !(name.starts_with("relay_table-") && name.ends_with(".bin")) {
            continue;
        }
        let bytes = std::fs::read(&path).expect("regression input");
        // SAFETY: the symbol is the Rust function `fuzz_target!` defined in
        // `target`, with exactly this signature.
        unsafe { rust_fuzzer_test_input(&bytes) };
        replayed += 1;
    }
    assert!(replayed > 0, "no relay_table regression found");
}
