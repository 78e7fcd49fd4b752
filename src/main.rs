//! The `ringkv` binary. The server does not exist yet (see the node issue); until then the
//! binary says so and exits non-zero rather than pretending to serve.

fn main() {
    eprintln!(
        "ringkv {}: only the Raft core (library) exists so far; the server is not built yet",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
