fn main() -> std::process::ExitCode {
    fortilab_scenarios::cli::main()
}
