fn main() -> std::process::ExitCode {
    fortilab_faz::cli::main()
}
