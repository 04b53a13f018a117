fn main() -> std::process::ExitCode {
    shipwatch::cli::main()
}
