/// Every fortilab binary runs on mimalloc, like the `fortilab` binary that `fortilab up`
/// re-executes for each device, so what the benchmarks measure is what users run
/// (BENCHMARKS.md, "Allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    fortilab_endpoint::cli::main()
}
