//! Compiles `proto/*.proto` with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(
        ["proto/flightbear.proto", "proto/flight_session.proto"],
        ["proto"],
    )?;
    prost_build::Config::new()
        .bytes(["."])
        // Settings in a handle encode in one order, whatever order they were set in.
        .btree_map(["."])
        .compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rustc-env=BUILD_ARROW_VERSION={}", arrow_version());
    Ok(())
}

/// The arrow version this build links, read from Cargo.lock (reported through GetSqlInfo).
fn arrow_version() -> String {
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"arrow-array\""
            && let Some(version) = lines.next().and_then(|l| l.strip_prefix("version = "))
        {
            return version.trim_matches('"').to_string();
        }
    }
    "unknown".to_string()
}
