//! The `fortilab` binary. It also carries every device: started with argv[0] set to a device
//! name (`sim-fortigate`, ...), it runs that device. This is how `fortilab up` starts its devices
//! as separate processes even when only this binary was built (`cargo run -- up`).

use std::process::ExitCode;

/// mimalloc for every process `fortilab up` starts (they all re-execute this binary): the
/// FortiGate proxy and the FortiAnalyzer's ingest were measured with it (glibc's per-thread
/// arenas cost the proxy a third of its throughput), and the EMS with 10,000 endpoints stays
/// under its 500 MB budget with it (487 MB peak; BENCHMARKS.md, "Allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.as_str() {
        "sim-fortigate" => fortilab_fortigate::cli::main(),
        "sim-faz" => fortilab_faz::cli::main(),
        "sim-ems" => fortilab_ems::cli::main(),
        "sim-endpoint" => fortilab_endpoint::cli::main(),
        "sim-internet" => fortilab_internet::cli::main(),
        _ if fortilab_k8s::cli::handles(std::env::args_os().nth(1).as_deref()) => {
            fortilab_k8s::cli::main()
        }
        _ => fortilab_scenarios::cli::main(),
    }
}
