//! `cargo xtask`: the release engineers' toolkit (see the library's docs).

fn main() -> std::process::ExitCode {
    xtask::xtask_main()
}
