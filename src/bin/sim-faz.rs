/// mimalloc for the FortiAnalyzer: ingest went from 139,000–147,000 to 169,000 logs/s
/// (BENCHMARKS.md). sim-ems and sim-endpoint keep the system allocator, which holds less
/// memory with 10,000 endpoints' TLS connections.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    fortilab_faz::cli::main()
}
