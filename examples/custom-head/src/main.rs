//! `custom-head`: the whole `vpipe` command line, with the `embedding` head of this
//! crate registered beside vpipe's own.
//!
//! `cargo run --release -p vpipe-custom-head -- run examples/custom-head/pipeline.yaml --input assets/street.mp4`

fn main() -> std::process::ExitCode {
    vpipe_cli::main_with(vpipe_custom_head::registry())
}
