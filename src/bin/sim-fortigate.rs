/// mimalloc for the FortiGate: glibc's per-thread arenas grew and trimmed their heaps
/// (`mprotect`) about twice per proxied request; mimalloc took the proxy from 28,000 to 40,000
/// requests/s (BENCHMARKS.md). Every fortilab binary uses it (`src/bin/fortilab.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    fortilab_fortigate::cli::main()
}
