fn main() -> std::process::ExitCode {
    fortilab_endpoint::cli::main()
}
