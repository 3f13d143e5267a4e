//! A package's files, named from its stem (`schema::release::stem`): the one
//! place each suffix is written. `package` writes these names, `publish`,
//! `verify`, the report and `download` find files by them.

pub const TARBALL_SUFFIX: &str = ".tar.gz";
pub const CHECKSUM_SUFFIX: &str = ".sha256";
pub const SIGNATURE_SUFFIX: &str = ".asc";
pub const MANIFEST_SUFFIX: &str = ".manifest.json";
const PART_INFIX: &str = ".part-";

/// `<stem>.tar.gz`
pub fn tarball(stem: &str) -> String {
    format!("{stem}{TARBALL_SUFFIX}")
}
/// The stem of `<stem>.tar.gz`.
pub fn tarball_stem(name: &str) -> Option<&str> {
    name.strip_suffix(TARBALL_SUFFIX)
}
/// `<tarball>.part-NNN`: the parts of a split package, in order.
pub fn part(tarball: &str, index: usize) -> String {
    format!("{tarball}{PART_INFIX}{index:03}")
}
/// The number of one of `tarball`'s parts (`007`), `None` for any other name.
pub fn part_number<'n>(tarball: &str, name: &'n str) -> Option<&'n str> {
    name.strip_prefix(tarball)
        .and_then(|r| r.strip_prefix(PART_INFIX))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}
/// Whether `name` is one of `tarball`'s parts.
pub fn is_part_of(tarball: &str, name: &str) -> bool {
    part_number(tarball, name).is_some()
}
/// Whether `name` is a package's data: a tarball or one of its parts.
pub fn is_data(name: &str) -> bool {
    let whole = whole_of(name);
    tarball_stem(whole).is_some() && (whole == name || is_part_of(whole, name))
}
/// The tarball a part belongs to, or the name itself.
pub fn whole_of(name: &str) -> &str {
    name.split(PART_INFIX).next().unwrap_or(name)
}
/// `<name>.sha256`: a file's checksum line.
pub fn checksum(name: &str) -> String {
    format!("{name}{CHECKSUM_SUFFIX}")
}
/// `<name>.asc`: a file's detached signature.
pub fn signature(name: &str) -> String {
    format!("{name}{SIGNATURE_SUFFIX}")
}
/// `<stem>.manifest.json`
pub fn manifest(stem: &str) -> String {
    format!("{stem}{MANIFEST_SUFFIX}")
}
/// `<stem>.sizes.json`: the signed sizes and SHA-256 of the data.
pub fn sizes(stem: &str) -> String {
    format!("{stem}.sizes.json")
}
/// `<stem>.spdx.json`: the SBOM.
pub fn sbom(stem: &str) -> String {
    format!("{stem}.spdx.json")
}
/// `<tarball>.verify.json`: what `verify` found (never published).
pub fn verify_report(tarball: &str) -> String {
    format!("{tarball}.verify.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_numbered_and_recognized() {
        let t = tarball("slurm-25.11-noble-cpu-x86_64");
        assert_eq!(part(&t, 7), "slurm-25.11-noble-cpu-x86_64.tar.gz.part-007");
        assert!(is_part_of(&t, &part(&t, 123)));
        assert!(!is_part_of(&t, &checksum(&part(&t, 1))));
        assert!(!is_part_of(&t, &format!("{t}.part-")));
        assert_eq!(whole_of(&part(&t, 2)), t);
        assert_eq!(tarball_stem(&t), Some("slurm-25.11-noble-cpu-x86_64"));
    }
}
