fn main() -> std::process::ExitCode {
    fortilab_internet::cli::main()
}
