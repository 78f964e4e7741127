fn main() -> std::process::ExitCode {
    fortilab_fortigate::cli::main()
}
