/// mimalloc for the FortiAnalyzer: ingest went from 139,000–147,000 to 169,000 logs/s
/// (BENCHMARKS.md). Every fortilab binary uses it (`src/bin/fortilab.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    fortilab_faz::cli::main()
}
