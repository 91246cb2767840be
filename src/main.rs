fn main() -> std::process::ExitCode {
    // The pod shim must start before anything else: no tokio, no threads (see runtime::shim).
    if std::env::args_os().nth(1).is_some_and(|arg| arg == "shim") {
        return berth::runtime::shim::main();
    }
    berth::cli::main()
}
