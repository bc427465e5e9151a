//! `vpipe`: the command line.

fn main() -> std::process::ExitCode {
    vpipe_cli::main()
}
