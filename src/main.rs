//! The `ami-zoho-bridge` command line (see [`cli`]).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
