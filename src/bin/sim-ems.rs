fn main() -> std::process::ExitCode {
    fortilab_ems::cli::main()
}
