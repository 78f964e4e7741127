/// mimalloc for the FortiGate: glibc's per-thread arenas grew and trimmed their heaps
/// (`mprotect`) about twice per proxied request; mimalloc took the proxy from 28,000 to 40,000
/// requests/s (BENCHMARKS.md). sim-ems and sim-endpoint keep the system allocator, which holds
/// less memory with 10,000 endpoints' TLS connections.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    fortilab_fortigate::cli::main()
}
