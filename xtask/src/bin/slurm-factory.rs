//! `slurm-factory`: the admins' installer, a single executable released with
//! the packages (see the library's docs).

fn main() -> std::process::ExitCode {
    xtask::admin_main()
}
